/* Calls every entry point of the malloc family, including failing calls, from 8 threads with frees
 * of other threads' objects, then forks; the child execs this program again. Every call made on
 * purpose is logged (to memory, written out at the end with write(2), so logging itself does not
 * allocate in between), one line per call:
 *
 *     <who> <op> <addr> <old_addr> <size> <nmemb> <align> <failed>
 *
 * where <who> is "t<i>" for worker thread i, "child" for the forked child, "exec" for the exec'd
 * image. Usage: calls LOGDIR [exec]. Exits non-zero if the shim changed what a call returned
 * (errno, alignment). Compile with -fno-builtin: GCC would turn realloc(NULL, n) into malloc(n). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 8
#define ROUNDS 200
#define MAXLOG 8192

struct entry {
    const char *op;
    uintptr_t addr, old;
    size_t size, nmemb, align;
    int failed;
};

static struct entry logs[THREADS + 1][MAXLOG];
static int nlog[THREADS + 1];
static void *shared[THREADS][ROUNDS];
static pthread_barrier_t barrier;
static int bad;

static void note(int who, const char *op, void *addr, void *old, size_t size, size_t nmemb, size_t align, int failed) {
    if (nlog[who] >= MAXLOG) {
        bad = 1;
        return;
    }
    struct entry *e = &logs[who][nlog[who]++];
    e->op = op;
    e->addr = (uintptr_t)addr;
    e->old = (uintptr_t)old;
    e->size = size;
    e->nmemb = nmemb;
    e->align = align;
    e->failed = failed;
}

static void check(int ok, const char *what) {
    if (!ok) {
        char buf[200];
        int n = snprintf(buf, sizeof buf, "check failed: %s\n", what);
        (void)!write(2, buf, n);
        bad = 1;
    }
}

/* One round of every entry point. Returns an object for another thread to free. */
static void *round_of_calls(int who, int r) {
    size_t sz = 1 + (size_t)((r * 37 + who * 11) % 3000);
    void *a = malloc(sz);
    note(who, "malloc", a, 0, sz, 1, 0, a == NULL);
    void *b = calloc(r % 5 + 1, 24);
    note(who, "calloc", b, 0, 24, r % 5 + 1, 0, b == NULL);
    void *c = realloc(NULL, 40);
    note(who, "realloc", c, NULL, 40, 1, 0, c == NULL);
    void *c2 = realloc(c, 4000 + r);
    note(who, "realloc", c2, c, 4000 + r, 1, 0, c2 == NULL);
    void *c3 = realloc(c2, 8);
    note(who, "realloc", c3, c2, 8, 1, 0, c3 == NULL);
    void *d = reallocarray(NULL, 10, 16);
    note(who, "reallocarray", d, NULL, 16, 10, 0, d == NULL);
    void *d2 = reallocarray(d, 20, 16);
    note(who, "reallocarray", d2, d, 16, 20, 0, d2 == NULL);
    void *e = NULL;
    int rc = posix_memalign(&e, 64, 100 + r);
    note(who, "posix_memalign", rc == 0 ? e : NULL, 0, 100 + r, 1, 64, rc != 0);
    check(rc == 0 && ((uintptr_t)e & 63) == 0, "posix_memalign(64) aligned");
    void *f = aligned_alloc(256, 512);
    note(who, "aligned_alloc", f, 0, 512, 1, 256, f == NULL);
    check(f && ((uintptr_t)f & 255) == 0, "aligned_alloc(256) aligned");
    void *g = memalign(4096, 77);
    note(who, "memalign", g, 0, 77, 1, 4096, g == NULL);
    check(g && ((uintptr_t)g & 4095) == 0, "memalign(4096) aligned");
    void *h = valloc(33);
    note(who, "valloc", h, 0, 33, 1, 0, h == NULL);
    void *i = pvalloc(5000);
    note(who, "pvalloc", i, 0, 5000, 1, 0, i == NULL);
    check(malloc_usable_size(a) >= sz, "malloc_usable_size");

    if (r % 20 == 0) {
        /* Failing calls: errno and results must be exactly what glibc gives. */
        errno = 0;
        void *x = malloc((size_t)-1 / 2);
        check(x == NULL && errno == ENOMEM, "malloc(huge) fails with ENOMEM");
        note(who, "malloc", x, 0, (size_t)-1 / 2, 1, 0, x == NULL);
        errno = 0;
        void *y = calloc((size_t)1 << 40, (size_t)1 << 40);
        check(y == NULL && errno == ENOMEM, "calloc overflow fails with ENOMEM");
        note(who, "calloc", y, 0, (size_t)1 << 40, (size_t)1 << 40, 0, y == NULL);
        void *z = (void *)1;
        rc = posix_memalign(&z, 3, 64);
        check(rc == EINVAL, "posix_memalign(3) is EINVAL");
        note(who, "posix_memalign", NULL, 0, 64, 1, 3, rc != 0);
        rc = posix_memalign(&z, 64, (size_t)-1 / 2);
        check(rc == ENOMEM, "posix_memalign(huge) is ENOMEM");
        note(who, "posix_memalign", NULL, 0, (size_t)-1 / 2, 1, 64, rc != 0);
        errno = 0;
        void *w = reallocarray(NULL, (size_t)1 << 40, (size_t)1 << 40);
        check(w == NULL && errno == ENOMEM, "reallocarray overflow fails with ENOMEM");
        note(who, "reallocarray", w, NULL, (size_t)1 << 40, (size_t)1 << 40, 0, w == NULL);
        errno = 0;
        void *m = memalign(3, 64);
        note(who, "memalign", m, 0, 64, 1, 3, m == NULL);
        free(m);
        note(who, "free", 0, m, 0, 0, 0, 0);
        free(NULL);
        note(who, "free", 0, NULL, 0, 0, 0, 0);
        /* realloc(p, 0) frees p and returns NULL in glibc. */
        void *q = malloc(10);
        note(who, "malloc", q, 0, 10, 1, 0, q == NULL);
        void *q2 = realloc(q, 0);
        /* NULL here is the free succeeding: the call did not fail. */
        note(who, "realloc", q2, q, 0, 1, 0, 0);
        free(q2);
        note(who, "free", 0, q2, 0, 0, 0, 0);
    }

    free(b);
    note(who, "free", 0, b, 0, 0, 0, 0);
    free(c3);
    note(who, "free", 0, c3, 0, 0, 0, 0);
    free(d2);
    note(who, "free", 0, d2, 0, 0, 0, 0);
    free(e);
    note(who, "free", 0, e, 0, 0, 0, 0);
    free(f);
    note(who, "free", 0, f, 0, 0, 0, 0);
    free(g);
    note(who, "free", 0, g, 0, 0, 0, 0);
    free(h);
    note(who, "free", 0, h, 0, 0, 0, 0);
    free(i);
    note(who, "free", 0, i, 0, 0, 0, 0);
    return a;
}

static void *worker(void *arg) {
    int who = (int)(intptr_t)arg;
    /* First call names the thread for the test: a size no other thread uses. */
    void *id = malloc(100000 + who);
    note(who, "malloc", id, 0, 100000 + who, 1, 0, id == NULL);
    for (int r = 0; r < ROUNDS; r++) shared[who][r] = round_of_calls(who, r);
    pthread_barrier_wait(&barrier);
    /* Free the objects of the next thread. */
    int victim = (who + 1) % THREADS;
    for (int r = 0; r < ROUNDS; r++) {
        free(shared[victim][r]);
        note(who, "free", 0, shared[victim][r], 0, 0, 0, 0);
    }
    free(id);
    note(who, "free", 0, id, 0, 0, 0, 0);
    return NULL;
}

static void write_log(const char *dir, const char *name, const char *who, int idx) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0) {
        bad = 1;
        return;
    }
    char line[300];
    for (int k = 0; k < nlog[idx]; k++) {
        struct entry *e = &logs[idx][k];
        int n = snprintf(line, sizeof line, "%s %s %lu %lu %lu %lu %lu %d\n", who, e->op,
                         (unsigned long)e->addr, (unsigned long)e->old, (unsigned long)e->size,
                         (unsigned long)e->nmemb, (unsigned long)e->align, e->failed);
        (void)!write(fd, line, n);
    }
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *dir = argv[1];
    if (argc > 2 && strcmp(argv[2], "exec") == 0) {
        /* The exec'd image: a few calls, logged as "exec". */
        for (int r = 0; r < 50; r++) {
            void *p = malloc(r + 1);
            note(0, "malloc", p, 0, r + 1, 1, 0, p == NULL);
            free(p);
            note(0, "free", 0, p, 0, 0, 0, 0);
        }
        write_log(dir, "exec.log", "exec", 0);
        return bad;
    }
    pthread_barrier_init(&barrier, NULL, THREADS);
    pthread_t tids[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&tids[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++) pthread_join(tids[t], NULL);
    for (int t = 0; t < THREADS; t++) {
        char who[8];
        snprintf(who, sizeof who, "t%d", t);
        write_log(dir, "threads.log", who, t);
    }
    pid_t pid = fork();
    if (pid == 0) {
        nlog[THREADS] = 0;
        for (int r = 0; r < 100; r++) shared[0][r] = round_of_calls(THREADS, r);
        for (int r = 0; r < 100; r++) {
            free(shared[0][r]);
            note(THREADS, "free", 0, shared[0][r], 0, 0, 0, 0);
        }
        write_log(dir, "child.log", "child", THREADS);
        execl(argv[0], argv[0], dir, "exec", (char *)NULL);
        _exit(99);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad = 1;
    return bad ? 1 : 0;
}
