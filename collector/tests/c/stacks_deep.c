/* Stacks deeper than --stack-depth, then shallower ones that share their outer frames:
 * climb(k) recurses to climb(MAX), then each level allocates on its way back, deepest first.
 * The stack of the allocation in climb(k) is main;climb x (k + 1);malloc: the deepest are cut at
 * the depth limit, and every one that fits must reach main (a cut stack's outer frames must not
 * stand in for a shallower stack's). noipa: no inlining, cloning or tail calls. */
#include <stdio.h>
#include <stdlib.h>

#define MAX 100

static void *keep[MAX + 1];

__attribute__((noipa)) void climb(int k) {
    if (k < MAX)
        climb(k + 1);
    keep[k] = malloc(24 + k);
    __asm__ volatile("" ::: "memory");
}

int main(void) {
    climb(0);
    size_t n = 0;
    for (int k = 0; k <= MAX; k++)
        n += keep[k] != NULL;
    printf("allocations %zu\n", n);
    return 0;
}
