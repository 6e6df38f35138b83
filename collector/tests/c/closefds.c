/* Behaves like a daemon that closes every descriptor it did not open, then reuses the numbers:
 * after the close, it opens OUT and dup2s it over 3..1023, allocates (so the recorder wants to
 * write), waits past a flush, then checks that OUT holds exactly what it wrote itself.
 * Usage: closefds OUT. Exit 0 when OUT is intact, 1 when something else wrote into it. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    for (int i = 0; i < 1000; i++) free(malloc(64));
    for (int fd = 3; fd < 1024; fd++) close(fd);
    int out = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (out < 0) return 2;
    for (int fd = 3; fd < 1024; fd++)
        if (fd != out) dup2(out, fd);
    const char msg[] = "only the program writes here\n";
    if (write(out, msg, sizeof msg - 1) != (ssize_t)(sizeof msg - 1)) return 2;
    for (int i = 0; i < 100000; i++) free(malloc(64));
    usleep(300000); /* several flush intervals */
    for (int i = 0; i < 1000; i++) free(malloc(64));
    char buf[256];
    ssize_t n = pread(out, buf, sizeof buf, 0);
    return (n == (ssize_t)(sizeof msg - 1) && memcmp(buf, msg, n) == 0) ? 0 : 1;
}
