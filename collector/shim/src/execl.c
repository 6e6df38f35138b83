/* The variadic exec functions, which a Rust shim cannot define on stable Rust. glibc's own execl,
 * execle and execlp call its internal execve directly, so without these wrappers a program using
 * them would exec without the shim's final flush. Each collects its arguments on the stack (as
 * glibc does) and calls the shim's execv / execve / execvp hook. */
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#define COLLECT(first, ap, argv, n)                                      \
    size_t n = 1;                                                        \
    va_start(ap, first);                                                 \
    while (va_arg(ap, const char *) != NULL) n++;                        \
    va_end(ap);                                                          \
    const char *argv[n + 1];                                             \
    argv[0] = first;                                                     \
    va_start(ap, first);                                                 \
    for (size_t i = 1; i <= n; i++) argv[i] = va_arg(ap, const char *);

int allocscope_execl(const char *path, const char *arg, ...) {
    va_list ap;
    COLLECT(arg, ap, argv, n)
    va_end(ap);
    return execv(path, (char *const *)argv);
}

int allocscope_execlp(const char *file, const char *arg, ...) {
    va_list ap;
    COLLECT(arg, ap, argv, n)
    va_end(ap);
    return execvp(file, (char *const *)argv);
}

int allocscope_execle(const char *path, const char *arg, ...) {
    va_list ap;
    COLLECT(arg, ap, argv, n)
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, (char *const *)argv, envp);
}
/* Exported as execl / execlp / execle by naked jumps in lifecycle.rs (rustc keeps C symbols of a
 * cdylib local). */
