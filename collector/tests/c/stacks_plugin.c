/* A library loaded with dlopen by stacks.c: plugin_entry -> plugin_leaf -> malloc.
 * noipa: no inlining, cloning or tail calls, so the chain is exactly these frames. */
#include <stdlib.h>

#define CHAIN __attribute__((noipa))

CHAIN void *plugin_leaf(size_t n) {
    void *p = malloc(n);
    __asm__ volatile("" ::: "memory");
    return p;
}

CHAIN void *plugin_entry(size_t n) {
    void *p = plugin_leaf(n);
    __asm__ volatile("" ::: "memory");
    return p;
}
