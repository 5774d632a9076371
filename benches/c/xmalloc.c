/*
 * xmalloc: the kind of load of xmalloc-test (Lever and Boreham's test of malloc in
 * multithreaded Linux programs): producer threads allocate, consumer threads free, so every
 * free is a free of a block another thread allocated.
 *
 * PRODUCERS threads each allocate BATCHES batches of BATCH blocks of 16 – 128 bytes (uniform),
 * tag them, and push each batch (a heap block holding the pointers) onto a bounded queue
 * protected by a mutex; CONSUMERS threads pop batches, check every block and free it, then the
 * batch. The checksum sums the tags of the blocks freed.
 */
#define PROGRAM "xmalloc"
#include "common.h"

#define PRODUCERS 2
#define CONSUMERS 2
/* Batches in all (split between the producers). */
#define BATCHES 60000
#define BATCH 64
/* Batches the queue holds at most (a producer waits when it is full). */
#define QUEUE 64

typedef struct {
    uint32_t n;
    uint32_t len[BATCH];
    uint64_t tag[BATCH];
    void *ptr[BATCH];
} batch_t;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    batch_t *slot[QUEUE];
    unsigned head, count;
    unsigned producers_left;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0,
       PRODUCERS};

static uint64_t batches_per_producer;
static uint64_t total;

static void push(batch_t *b)
{
    pthread_mutex_lock(&q.lock);
    while (q.count == QUEUE)
        pthread_cond_wait(&q.not_full, &q.lock);
    q.slot[(q.head + q.count) % QUEUE] = b;
    q.count++;
    pthread_cond_signal(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
}

/* The next batch, or NULL once every producer is done and the queue is empty. */
static batch_t *pop(void)
{
    pthread_mutex_lock(&q.lock);
    while (q.count == 0 && q.producers_left > 0)
        pthread_cond_wait(&q.not_empty, &q.lock);
    batch_t *b = NULL;
    if (q.count > 0) {
        b = q.slot[q.head];
        q.head = (q.head + 1) % QUEUE;
        q.count--;
        pthread_cond_signal(&q.not_full);
    }
    pthread_mutex_unlock(&q.lock);
    return b;
}

static void *producer(void *arg)
{
    unsigned p = (unsigned)(uintptr_t)arg;
    rng_t r = rng_seed(200 + p);
    for (uint64_t k = 0; k < batches_per_producer; k++) {
        batch_t *b = xmalloc(sizeof *b);
        b->n = BATCH;
        for (uint32_t i = 0; i < BATCH; i++) {
            b->len[i] = 16 + (uint32_t)rng_below(&r, 113);
            b->tag[i] = mix(((uint64_t)p << 48) ^ (k << 8) ^ i);
            b->ptr[i] = xmalloc(b->len[i]);
            tag_write(b->ptr[i], b->len[i], b->tag[i]);
        }
        push(b);
    }
    pthread_mutex_lock(&q.lock);
    q.producers_left--;
    pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    uint64_t sum = 0;
    batch_t *b;
    while ((b = pop()) != NULL) {
        for (uint32_t i = 0; i < b->n; i++) {
            sum += tag_check(b->ptr[i], b->len[i], b->tag[i]);
            free(b->ptr[i]);
        }
        free(b);
    }
    pthread_mutex_lock(&q.lock);
    total += sum;
    pthread_mutex_unlock(&q.lock);
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = parse_scale(argc, argv);
    batches_per_producer = scaled(BATCHES / PRODUCERS, scale, 16);
    pthread_t prod[PRODUCERS], cons[CONSUMERS];
    for (unsigned i = 0; i < CONSUMERS; i++)
        xpthread_create(&cons[i], consumer, NULL);
    for (unsigned i = 0; i < PRODUCERS; i++)
        xpthread_create(&prod[i], producer, (void *)(uintptr_t)i);
    for (unsigned i = 0; i < PRODUCERS; i++)
        xpthread_join(prod[i]);
    for (unsigned i = 0; i < CONSUMERS; i++)
        xpthread_join(cons[i]);
    report(total);
    return 0;
}
