/* Allocating call chains with known stacks (collector/tests/stacks.rs, tests/cli_stacks.rs),
 * built -O2 -fomit-frame-pointer -g. Every chain function is noipa (no inlining, cloning or tail
 * call) unless it is meant to be inlined. Prints how many allocations each chain made.
 * Usage: stacks PLUGIN.so [settle]
 *   main;run_plugin;plugin_entry;plugin_leaf    7 x malloc(32), through a dlopen'd library
 *                                               (closed at once; with "settle": 300 ms after
 *                                               dlopen first, and never closed)
 *   main;sort_things;<qsort in libc>;cmp_alloc  one malloc(16) per comparison
 *   main;build_list;make_node                   5 x malloc(24), make_node inlined
 *   main;grow                                   3 x realloc, growing one block */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHAIN __attribute__((noipa))

typedef void *(*entry_fn)(size_t);

static void *volatile keep[64];
static void *volatile seen;
static int comparisons;

CHAIN void *run_plugin(entry_fn f, size_t n) {
    void *p = f(n);
    __asm__ volatile("" ::: "memory");
    return p;
}

CHAIN int cmp_alloc(const void *a, const void *b) {
    char *scratch = malloc(16);
    comparisons++;
    int x = *(const int *)a, y = *(const int *)b;
    scratch[0] = (char)x;
    seen = scratch; /* escapes: the compiler cannot drop the malloc/free pair */
    free(scratch);
    return (x > y) - (x < y);
}

CHAIN void sort_things(int *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_alloc);
    __asm__ volatile("" ::: "memory");
}

/* The leaf of its chain: inlined into build_list, named from DWARF's inlined subroutines. */
static inline __attribute__((always_inline)) void *make_node(size_t n) {
    char *p = malloc(n);
    if (p)
        memset(p, 0, n);
    return p;
}

CHAIN void build_list(int n) {
    for (int i = 0; i < n; i++)
        keep[10 + i] = make_node(24);
    __asm__ volatile("" ::: "memory");
}

CHAIN void *grow(void *p, size_t n) {
    p = realloc(p, n);
    __asm__ volatile("" ::: "memory");
    return p;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: stacks PLUGIN.so [settle]\n");
        return 2;
    }
    int settle = argc > 2 && strcmp(argv[2], "settle") == 0;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    entry_fn f = (entry_fn)dlsym(h, "plugin_entry");
    if (settle)
        usleep(300 * 1000);
    for (int i = 0; i < 7; i++)
        keep[i] = run_plugin(f, 32);
    for (int i = 0; i < 7; i++)
        free(keep[i]);
    if (!settle)
        dlclose(h);

    int v[100];
    for (int i = 0; i < 100; i++)
        v[i] = (i * 37) % 101;
    sort_things(v, 100);

    build_list(5);

    void *g = NULL;
    for (int i = 1; i <= 3; i++)
        g = grow(g, 1000 * (size_t)i);
    keep[20] = g;

    printf("plugin 7\ncomparisons %d\nnodes 5\ngrow 3\n", comparisons);
    return 0;
}
