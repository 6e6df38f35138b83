/* Makes 1000 malloc/free pairs, then leaves at once (well within one flush interval) by the way
 * named on the command line: return, exit, _exit, abort, or a thread calling exit while another
 * thread still allocates. Usage: exits HOW. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *spin(void *arg) {
    (void)arg;
    for (;;) free(malloc(32));
    return NULL;
}

int main(int argc, char **argv) {
    for (int i = 0; i < 1000; i++) free(malloc(100 + i));
    const char *how = argc > 1 ? argv[1] : "return";
    if (strcmp(how, "exit") == 0) exit(3);
    if (strcmp(how, "_exit") == 0) _exit(4);
    if (strcmp(how, "abort") == 0) abort();
    if (strcmp(how, "busy-exit") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, spin, NULL);
        usleep(20000);
        exit(6);
    }
    return 5;
}
