/*
 * churn: single-threaded random-size churn, the kind of load of glibc's malloc benchmarks
 * (mimalloc-bench's `glibc-simple` / glibc's bench-malloc-thread run on one thread).
 *
 * An array of SLOTS live pointers; each step picks a random slot, frees the block there (after
 * checking its tag) and puts a new block of a random size in its place. Sizes are mostly small:
 * 98% log-uniform over 16 B – 1 KiB, 2% log-uniform over 1 – 32 KiB. At the end every block left
 * is checked and freed. The checksum sums the tags of the blocks freed.
 */
#define PROGRAM "churn"
#include "common.h"

#define SLOTS 4096
#define STEPS 8000000

/* 16 B – 1 KiB (log-uniform, 16 steps per power of two), occasionally 1 – 32 KiB. */
static size_t pick_size(rng_t *r)
{
    if (rng_below(r, 100) < 98) {
        uint64_t k = rng_below(r, 6 * 16);
        return ((size_t)16 << (k / 16)) * (16 + k % 16) / 16 + rng_below(r, 8);
    }
    uint64_t k = rng_below(r, 5 * 16);
    return ((size_t)1024 << (k / 16)) * (16 + k % 16) / 16;
}

int main(int argc, char **argv)
{
    double scale = parse_scale(argc, argv);
    uint64_t steps = scaled(STEPS, scale, SLOTS);
    static void *ptr[SLOTS];
    static size_t len[SLOTS];
    static uint64_t tag[SLOTS];
    rng_t r = rng_seed(1);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < steps; i++) {
        size_t s = rng_below(&r, SLOTS);
        if (ptr[s] != NULL) {
            sum += tag_check(ptr[s], len[s], tag[s]);
            free(ptr[s]);
        }
        len[s] = pick_size(&r);
        tag[s] = mix(i);
        ptr[s] = xmalloc(len[s]);
        tag_write(ptr[s], len[s], tag[s]);
    }
    for (size_t s = 0; s < SLOTS; s++) {
        if (ptr[s] != NULL) {
            sum += tag_check(ptr[s], len[s], tag[s]);
            free(ptr[s]);
        }
    }
    report(sum);
    return 0;
}
