/* Stacks in awkward places (collector/tests/stacks.rs), built -O2 -fomit-frame-pointer -g:
 *   threads   4 threads started and ended while allocating: thread_body allocates, and its
 *             thread-specific data destructor allocates while the thread exits
 *   fork      a child that allocates in child_work, then exits
 *   signal    a SIGUSR1 handler that allocates (on the thread's stack), then one on an
 *             alternate signal stack
 * Prints what it did; exits 0. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHAIN __attribute__((noipa))

static void *volatile sink;
static pthread_key_t key;

CHAIN static void at_thread_exit(void *p) {
    free(p);
    sink = malloc(48);
    free(sink);
}

CHAIN static void *thread_body(void *arg) {
    (void)arg;
    pthread_setspecific(key, malloc(16));
    for (int i = 0; i < 100; i++) {
        void *p = malloc(64 + i);
        sink = p;
        free(p);
    }
    return NULL;
}

CHAIN static void child_work(void) {
    for (int i = 0; i < 10; i++)
        sink = malloc(200);
}

CHAIN static void on_signal(int sig) {
    (void)sig;
    sink = malloc(300);
}

int main(void) {
    pthread_key_create(&key, at_thread_exit);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, thread_body, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);

    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        child_work();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);

    stack_t ss;
    ss.ss_sp = malloc(1 << 16);
    ss.ss_size = 1 << 16;
    ss.ss_flags = 0;
    sigaltstack(&ss, NULL);
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);

    printf("threads 4\nchild %d\nsignals 2\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
