/* Usage: churn THREADS ROUNDS
 * Every thread reallocs, mallocs and frees blocks of random sizes (many reallocs move their
 * block), and hands some blocks to the next thread, which frees them: a correct program, so the
 * trace must show no anomaly in any order it gives. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 64
#define THREADS_MAX 64

static int threads, rounds;
/* One mailbox per thread: a block handed over by the previous thread. */
static void *_Atomic mailbox[THREADS_MAX];

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *worker(void *arg) {
    long t = (long)arg;
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1);
    void *slot[SLOTS] = {0};
    for (int i = 0; i < rounds; i++) {
        int k = next(&s) % SLOTS;
        size_t size = 16 + next(&s) % (next(&s) % 4 == 0 ? 65536 : 512);
        uint64_t what = next(&s) % 8;
        if (!slot[k]) {
            slot[k] = malloc(size);
        } else if (what < 5) {
            void *n = realloc(slot[k], size);
            if (n) slot[k] = n;
        } else if (what == 5) {
            void *old = __atomic_exchange_n(&mailbox[(t + 1) % threads], slot[k], __ATOMIC_ACQ_REL);
            free(old);
            slot[k] = NULL;
        } else {
            free(slot[k]);
            slot[k] = NULL;
        }
        if (slot[k]) memset(slot[k], (int)t, 8);
        void *mine = __atomic_exchange_n(&mailbox[t], NULL, __ATOMIC_ACQ_REL);
        free(mine);
    }
    for (int k = 0; k < SLOTS; k++) free(slot[k]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    threads = atoi(argv[1]);
    rounds = atoi(argv[2]);
    if (threads < 1 || threads > THREADS_MAX) return 2;
    pthread_t th[THREADS_MAX];
    for (long t = 0; t < threads; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < threads; t++) free(mailbox[t]);
    return 0;
}
