/* Allocates steadily for MS milliseconds (a small batch every millisecond), then exits 0.
 * Usage: steady MS. */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long ms_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
    long ms = argc > 1 ? atol(argv[1]) : 1000;
    long end = ms_now() + ms;
    while (ms_now() < end) {
        for (int i = 0; i < 20; i++) free(malloc(16 + i));
        usleep(1000);
    }
    return 0;
}
