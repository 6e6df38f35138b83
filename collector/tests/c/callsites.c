// Call sites with known figures, for `report`'s call-site views (tests/cli_callsites.rs).
//
// - keep_nodes: 1000 blocks of 100 bytes, all live at the peak, 10 of them never freed;
// - scratch: 5000 blocks of 33 bytes (or as many as the first argument says), each freed at
//   once (temporary; 33 -> Go's 48-byte class: 15 bytes of waste each);
// - grow: one buffer grown by realloc from 64 to 64 KiB, doubling (10 reallocs), then freed;
//   after each step `block` allocates 96 KiB (12 Go pages: no waste) behind it, larger than any
//   free chunk, so every realloc moves and copies the old block (64 + 128 + ... + 32 KiB = 65472
//   bytes); the blockers are freed last, the last one temporary;
// - the peak comes with the last blocker: 108000 + 65536 + 11 * 98304 bytes.
// noinline and a volatile sink keep each function a frame of its own at -O2.
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

__attribute__((noinline)) static void **keep_nodes(int n) {
    void **nodes = malloc(n * sizeof(void *));
    for (int i = 0; i < n; i++) {
        nodes[i] = malloc(100);
        memset(nodes[i], 1, 100);
    }
    return nodes;
}

__attribute__((noinline)) static void scratch(int n) {
    for (int i = 0; i < n; i++) {
        char *p = malloc(33);
        p[0] = (char)i;
        sink = p;
        free(p);
    }
}

__attribute__((noinline)) static void *block(void) {
    void *p = malloc(96 * 1024);
    sink = p; // not a tail call: block stays a frame
    return p;
}

__attribute__((noinline)) static void grow(void) {
    void *blockers[11];
    size_t size = 64;
    char *buf = malloc(size);
    memset(buf, 0, size);
    blockers[0] = block();
    for (int i = 0; i < 10; i++) {
        size *= 2;
        buf = realloc(buf, size);
        memset(buf, 2, size);
        blockers[i + 1] = block();
    }
    sink = buf;
    free(buf);
    for (int i = 0; i < 11; i++) {
        free(blockers[i]);
    }
}

int main(int argc, char **argv) {
    void **nodes = keep_nodes(1000);
    scratch(argc > 1 ? atoi(argv[1]) : 5000);
    grow();
    for (int i = 10; i < 1000; i++) {
        free(nodes[i]);
    }
    free(nodes);
    return 0;
}
