/* Usage: killed COUNTS_FILE THREADS KILL_AFTER
 * THREADS threads each loop malloc(24 + t) / free, and after every call that returned publish how
 * many calls they completed in slot t of COUNTS_FILE (mapped shared, so the numbers survive the
 * process). Once thread 0 has completed KILL_AFTER calls, it raises SIGKILL: the other threads may
 * be inside a call at that moment. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile uint64_t *counts;
static long kill_after;

static void *worker(void *arg) {
    long t = (long)arg;
    uint64_t done = 0;
    for (;;) {
        void *p = malloc(24 + t);
        __atomic_store_n(&counts[t], ++done, __ATOMIC_RELEASE);
        free(p);
        __atomic_store_n(&counts[t], ++done, __ATOMIC_RELEASE);
        if (t == 0 && (long)done >= kill_after) raise(SIGKILL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int threads = atoi(argv[2]);
    kill_after = atol(argv[3]);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 3;
    counts = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (counts == MAP_FAILED) return 4;
    pthread_t th[64];
    for (long t = 1; t < threads && t < 64; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    worker((void *)0);
    return 0;
}
