/* Stress: THREADS threads each make N malloc/free pairs as fast as they can, keeping a window of
 * live objects so addresses are reused across threads' frees. Prints the number of calls per thread
 * ("calls <n>") so the test can compare with the trace. Usage: stress THREADS N [kill]: with "kill",
 * the program waits 500 ms after the work (several flush intervals) and SIGKILLs itself. */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static long per_thread;

static void *work(void *arg) {
    uintptr_t seed = (uintptr_t)arg * 2654435761u + 1;
    void *window[64] = {0};
    for (long i = 0; i < per_thread; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int slot = (int)((seed >> 33) % 64);
        free(window[slot]);
        window[slot] = malloc(8 + (seed >> 50) % 512);
    }
    for (int s = 0; s < 64; s++) free(window[s]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int threads = atoi(argv[1]);
    per_thread = atol(argv[2]);
    pthread_t t[256];
    for (int i = 0; i < threads && i < 256; i++) pthread_create(&t[i], NULL, work, (void *)(uintptr_t)i);
    for (int i = 0; i < threads && i < 256; i++) pthread_join(t[i], NULL);
    printf("calls %ld\n", 2 * per_thread + 64);
    fflush(stdout);
    if (argc > 3 && strcmp(argv[3], "kill") == 0) {
        usleep(500000);
        /* More calls that the last flush before the kill may or may not catch. */
        for (int i = 0; i < 1000; i++) free(malloc(16));
        kill(getpid(), SIGKILL);
    }
    return 0;
}
