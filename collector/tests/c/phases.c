// Three phases 400 ms apart, for `report --from/--to` (tests/cli_callsites.rs):
// - build (t ~ 0): an array of 2000 pointers (16000 B, Go's 16384-byte class) and 2000 nodes of
//   200 B (208-byte class), all kept;
// - then, after 400 ms: release_half frees the first 1000 nodes (each had >= 200000 bytes
//   allocated after it: not temporary), churn allocates and frees 3000 blocks of 40 B (48-byte
//   class, temporary), cache keeps 500 blocks of 1000 B (1024-byte class);
// - then, after 400 ms more: teardown frees everything, and late allocates and frees 100 blocks
//   of 64 B (a class of its own: no waste).
// Nothing else allocates (no stdio). noinline keeps each function a frame of its own at -O2.
#include <stdlib.h>
#include <time.h>

static void *volatile sink;

__attribute__((noinline)) static void **build(int n) {
    void **nodes = malloc(n * sizeof(void *));
    for (int i = 0; i < n; i++) {
        nodes[i] = malloc(200);
        sink = nodes[i];
    }
    return nodes;
}

__attribute__((noinline)) static void release_half(void **nodes, int n) {
    for (int i = 0; i < n / 2; i++) {
        free(nodes[i]);
    }
}

__attribute__((noinline)) static void churn(int n) {
    for (int i = 0; i < n; i++) {
        char *p = malloc(40);
        p[0] = (char)i;
        sink = p;
        free(p);
    }
}

__attribute__((noinline)) static void **cache(int n) {
    void **kept = calloc(n, sizeof(void *));
    for (int i = 0; i < n; i++) {
        kept[i] = malloc(1000);
        sink = kept[i];
    }
    return kept;
}

__attribute__((noinline)) static void late(int n) {
    for (int i = 0; i < n; i++) {
        char *p = malloc(64);
        sink = p;
        free(p);
    }
}

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
}

int main(void) {
    void **nodes = build(2000);
    pause_ms(400);
    release_half(nodes, 2000);
    churn(3000);
    void **kept = cache(500);
    pause_ms(400);
    for (int i = 1000; i < 2000; i++) {
        free(nodes[i]);
    }
    free(nodes);
    for (int i = 0; i < 500; i++) {
        free(kept[i]);
    }
    free(kept);
    late(100);
    return 0;
}
