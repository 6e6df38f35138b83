// Allocations while a C++ exception unwinds through frames (collector/tests/stacks.rs), built
// -O2 -fomit-frame-pointer -g. Each of 5 rounds:
//   main;outer;middle;thrower;__cxa_allocate_exception       the exception object
//   main;outer;middle;Guard::~Guard();operator new[]...     run by the unwinder from middle's
//                                                            landing pad: thrower's frame is gone
//   main;outer                                               new[] in the catch handler
#include <cstdio>
#include <stdexcept>

#define CHAIN __attribute__((noipa))

static char *volatile kept[16];
static int rounds;

struct Guard {
    int i;
    CHAIN ~Guard() { kept[i] = new char[40]; }
};

CHAIN void thrower(int i) {
    if (i >= 0)
        throw i;
}

CHAIN void middle(int i) {
    Guard g{i};
    thrower(i);
    kept[i + 8] = nullptr;
}

CHAIN void outer(int i) {
    try {
        middle(i);
    } catch (int e) {
        kept[e + 8] = new char[8];
        rounds++;
    }
}

int main() {
    for (int i = 0; i < 5; i++)
        outer(i);
    std::printf("rounds %d\n", rounds);
    return 0;
}
