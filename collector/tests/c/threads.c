/* Many short-lived threads (in waves of 10), each allocating a per-thread buffer that a pthread key
 * destructor frees as the thread exits: those frees come after the shim's own thread-exit
 * destructor has run (its key is older), so they exercise the shim's exiting-thread path.
 * Usage: threads WAVES. Each thread t mallocs 3 objects of size 5000 + t and frees them. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

static pthread_key_t key;

static void drop_buffer(void *p) { free(p); }

static void *work(void *arg) {
    size_t t = (size_t)(uintptr_t)arg;
    void *a = malloc(5000 + t);
    void *b = malloc(5000 + t);
    pthread_setspecific(key, malloc(5000 + t)); /* freed by drop_buffer at thread exit */
    free(a);
    free(b);
    return NULL;
}

int main(int argc, char **argv) {
    int waves = argc > 1 ? atoi(argv[1]) : 30;
    pthread_key_create(&key, drop_buffer);
    for (int w = 0; w < waves; w++) {
        pthread_t t[10];
        for (int i = 0; i < 10; i++) pthread_create(&t[i], NULL, work, (void *)(uintptr_t)(w * 10 + i));
        for (int i = 0; i < 10; i++) pthread_join(t[i], NULL);
    }
    return 0;
}
