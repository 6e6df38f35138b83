/* Threads started with the smallest stack glibc allows (PTHREAD_STACK_MIN), each allocating;
 * then a first allocation on an alternate signal stack. Under the recorder with stacks on, the
 * program must run as it does untraced (it once overflowed those stacks). */
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
static void *work(void *a) { void *p[50]; for (int i = 0; i < 50; i++) p[i] = malloc(16 + i); for (int i = 0; i < 50; i++) free(p[i]); return a; }
static char alt[65536];
static void on_sig(int s) { (void)s; void *p = malloc(40); free(p); }
int main(void) {
    pthread_attr_t at; pthread_attr_init(&at); pthread_attr_setstacksize(&at, PTHREAD_STACK_MIN);
    pthread_t t[8];
    for (int i = 0; i < 8; i++) pthread_create(&t[i], &at, work, NULL);
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    /* a thread whose first allocation is on an alternate signal stack */
    stack_t ss = { .ss_sp = alt, .ss_size = sizeof alt, .ss_flags = 0 }; sigaltstack(&ss, NULL);
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = on_sig; sa.sa_flags = SA_ONSTACK; sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    void *q = malloc(100); free(q);
    puts("ok");
    return 0;
}
