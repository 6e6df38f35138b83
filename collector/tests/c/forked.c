/* Usage: forked
 * The parent allocates 100 blocks and forks; the child frees 50 of them (blocks it inherited),
 * allocates and frees 10 of its own, and exits; the parent waits, frees the rest and exits. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    void *b[100];
    for (int i = 0; i < 100; i++) b[i] = malloc(32 + i);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < 50; i++) free(b[i]);
        for (int i = 0; i < 10; i++) free(malloc(4000 + i));
        exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    for (int i = 0; i < 100; i++) free(b[i]);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
