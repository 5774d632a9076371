/*
 * shbench: the kind of load of MicroQuill's SmartHeap benchmarks sh6bench and sh8bench.
 *
 * THREADS threads (2; `-DTHREADS=4` builds the 4-thread variant) share ROUNDS rounds of work.
 * In each round a thread allocates a batch of BATCH blocks of 1 B – 1 KiB (uniform) and frees
 * them in a varied order: FIFO, LIFO or random, by turns. Half of the batch is freed at once,
 * the other half only in the next round, after that round's batch was allocated (so frees and
 * allocations interleave with older live blocks, as in sh6bench). As in sh8bench, one block in
 * HAND is not freed by its thread: it goes, in a message (itself a heap block), to the next
 * thread's mailbox, and that thread frees it at the start of its next round. Every block is
 * checked before it is freed; the checksum sums the tags of all blocks.
 */
#ifndef PROGRAM
#define PROGRAM "shbench"
#endif
#include "common.h"

#ifndef THREADS
#define THREADS 2
#endif
/* Rounds in all (split between the threads, so the variants do the same work). */
#define ROUNDS 7200
#define BATCH 512
#define HAND 8

typedef struct {
    void *ptr;
    uint32_t len;
    uint64_t tag;
} block_t;

/* Blocks handed to another thread. */
typedef struct message {
    struct message *next;
    uint32_t n;
    block_t block[BATCH / HAND];
} message_t;

static struct {
    pthread_mutex_t lock;
    message_t *head;
} mailbox[THREADS];

static uint64_t rounds_per_thread;
static pthread_mutex_t sum_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t total;

static uint64_t free_block(block_t *b)
{
    uint64_t t = tag_check(b->ptr, b->len, b->tag);
    free(b->ptr);
    return t;
}

static uint64_t free_messages(message_t *m)
{
    uint64_t sum = 0;
    while (m != NULL) {
        message_t *next = m->next;
        for (uint32_t i = 0; i < m->n; i++)
            sum += free_block(&m->block[i]);
        free(m);
        m = next;
    }
    return sum;
}

/* Frees the n blocks of `b` (n >= 1) in order `order`: 0 FIFO, 1 LIFO, 2 random. */
static uint64_t free_in_order(block_t *b, uint32_t n, unsigned order, rng_t *r)
{
    uint64_t sum = 0;
    if (order == 2) {
        for (uint32_t i = n - 1; i > 0; i--) {
            uint32_t j = (uint32_t)rng_below(r, i + 1);
            block_t t = b[i];
            b[i] = b[j];
            b[j] = t;
        }
    }
    for (uint32_t i = 0; i < n; i++)
        sum += free_block(&b[order == 1 ? n - 1 - i : i]);
    return sum;
}

static void *worker(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    rng_t r = rng_seed(100 + t);
    static __thread block_t now[BATCH], later[BATCH];
    uint32_t n_later = 0;
    uint64_t sum = 0;
    for (uint64_t round = 0; round < rounds_per_thread; round++) {
        pthread_mutex_lock(&mailbox[t].lock);
        message_t *mine = mailbox[t].head;
        mailbox[t].head = NULL;
        pthread_mutex_unlock(&mailbox[t].lock);
        sum += free_messages(mine);

        message_t *m = xmalloc(sizeof *m);
        m->n = 0;
        uint32_t n_now = 0, kept = 0;
        for (uint32_t i = 0; i < BATCH; i++) {
            block_t b;
            b.len = 1 + (uint32_t)rng_below(&r, 1024);
            b.tag = mix(((uint64_t)t << 48) ^ (round << 16) ^ i);
            b.ptr = xmalloc(b.len);
            tag_write(b.ptr, b.len, b.tag);
            if (i % HAND == HAND - 1)
                m->block[m->n++] = b;
            else if (i % 2 == 0)
                now[n_now++] = b;
            else
                later[n_later + kept++] = b;
        }
        unsigned to = (t + 1) % THREADS;
        pthread_mutex_lock(&mailbox[to].lock);
        m->next = mailbox[to].head;
        mailbox[to].head = m;
        pthread_mutex_unlock(&mailbox[to].lock);

        /* Last round's second half, then half of this batch; the rest waits a round. */
        if (n_later > 0)
            sum += free_in_order(later, n_later, (unsigned)(round + 1) % 3, &r);
        memmove(later, later + n_later, kept * sizeof later[0]);
        n_later = kept;
        sum += free_in_order(now, n_now, (unsigned)round % 3, &r);
    }
    if (n_later > 0)
        sum += free_in_order(later, n_later, 2, &r);
    pthread_mutex_lock(&sum_lock);
    total += sum;
    pthread_mutex_unlock(&sum_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = parse_scale(argc, argv);
    rounds_per_thread = scaled(ROUNDS / THREADS, scale, 4);
    pthread_t th[THREADS];
    for (unsigned t = 0; t < THREADS; t++)
        pthread_mutex_init(&mailbox[t].lock, NULL);
    for (unsigned t = 0; t < THREADS; t++)
        xpthread_create(&th[t], worker, (void *)(uintptr_t)t);
    for (unsigned t = 0; t < THREADS; t++)
        xpthread_join(th[t]);
    /* What was handed over in the last rounds. */
    for (unsigned t = 0; t < THREADS; t++)
        total += free_messages(mailbox[t].head);
    report(total);
    return 0;
}
