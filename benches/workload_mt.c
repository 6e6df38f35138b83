/* A multithreaded C workload for benches/record_overhead.sh: THREADS threads each replace objects
 * in a window of 4096 live ones, ITERS times: free the old object, malloc a new one of 16..2063
 * bytes, fill it, and read part of it back (a few hundred ns of work per allocation, like a program
 * that uses what it allocates). Prints a checksum so the work cannot be optimised away.
 * Usage: workload_mt THREADS ITERS */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long iters;

static void *work(void *arg) {
    uint64_t seed = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1, sum = 0;
    enum { WINDOW = 4096 };
    unsigned char **win = calloc(WINDOW, sizeof *win);
    for (long i = 0; i < iters; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t slot = (seed >> 20) % WINDOW, size = 16 + (seed >> 40) % 2048;
        free(win[slot]);
        unsigned char *p = malloc(size);
        memset(p, (int)i, size);
        for (size_t k = 0; k < size; k += 64) sum += p[k];
        win[slot] = p;
    }
    for (int s = 0; s < WINDOW; s++) free(win[s]);
    free(win);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    iters = argc > 2 ? atol(argv[2]) : 1000000;
    pthread_t t[64];
    uint64_t total = 0;
    for (int i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, work, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < threads && i < 64; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (uintptr_t)r;
    }
    printf("%llu\n", (unsigned long long)total);
    return 0;
}
