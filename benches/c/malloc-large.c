/*
 * malloc-large: the kind of load of mimalloc-bench's malloc-large: large blocks, a few live at
 * a time, allocated, touched and freed over and over.
 *
 * LIVE slots; each of STEPS steps picks a random slot, frees the block there (after checking
 * the byte it wrote into each of its pages) and allocates a new one of 2 – 32 MiB (uniform,
 * not a multiple of the page size), writing one byte into each of its 4 KiB pages. The
 * checksum sums the bytes checked.
 */
#define PROGRAM "malloc-large"
#include "common.h"

#define LIVE 4
#define STEPS 110
#define PAGE 4096
#define MIB ((size_t)1 << 20)

typedef struct {
    unsigned char *ptr;
    size_t len;
    uint64_t tag;
} block_t;

/* The byte written into page `page` of a block tagged `tag`. */
static inline unsigned char page_byte(uint64_t tag, size_t page)
{
    return (unsigned char)(tag >> (8 * (page & 7))) ^ (unsigned char)page;
}

static uint64_t drop(block_t *b)
{
    uint64_t sum = 0;
    for (size_t off = 0, page = 0; off < b->len; off += PAGE, page++) {
        unsigned char want = page_byte(b->tag, page);
        if (b->ptr[off] != want)
            fail("block %p of %zu bytes: page %zu was overwritten while live", (void *)b->ptr,
                 b->len, page);
        sum += want;
    }
    free(b->ptr);
    b->ptr = NULL;
    return sum;
}

int main(int argc, char **argv)
{
    double scale = parse_scale(argc, argv);
    uint64_t steps = scaled(STEPS, scale, 8);
    block_t live[LIVE] = {{0}};
    rng_t r = rng_seed(7);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < steps; i++) {
        block_t *b = &live[rng_below(&r, LIVE)];
        if (b->ptr != NULL)
            sum += drop(b);
        b->len = 2 * MIB + rng_below(&r, 30 * MIB);
        b->tag = mix(i);
        b->ptr = xmalloc(b->len);
        for (size_t off = 0, page = 0; off < b->len; off += PAGE, page++)
            b->ptr[off] = page_byte(b->tag, page);
    }
    for (unsigned s = 0; s < LIVE; s++)
        if (live[s].ptr != NULL)
            sum += drop(&live[s]);
    report(sum);
    return 0;
}
