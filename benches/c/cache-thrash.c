/*
 * cache-thrash: the kind of load of Hoard's cache-thrash and cache-scratch benchmarks: threads
 * allocate small objects and write them over and over, so an allocator that gives objects on
 * one cache line to different threads makes the cores fight over that line (false sharing).
 *
 * Two phases of THREADS threads, each thread doing ITERATIONS times: malloc(OBJECT), write
 * every byte of it WRITES times, check it, free it.
 *   - thrash (active false sharing, cache-thrash): the threads allocate their own objects from
 *     the start;
 *   - scratch (passive false sharing, cache-scratch): the main thread first allocates one object
 *     per thread, one right after the other, and hands one to each thread, which frees it before
 *     its loop: an allocator that gives the freed object back to that thread keeps the threads
 *     writing into one cache line.
 * The checksum sums the last bytes written and the handed objects' tags.
 */
#define PROGRAM "cache-thrash"
#include "common.h"

#define THREADS 2
#define OBJECT 8
#define ITERATIONS 5000
#define WRITES 6000

typedef struct {
    unsigned thread;
    unsigned char *handed; /* scratch: the object to free first (NULL: thrash) */
    uint64_t handed_tag;
    uint64_t iterations;
    uint64_t sum;
} job_t;

static void *worker(void *arg)
{
    job_t *job = arg;
    uint64_t sum = 0;
    if (job->handed != NULL) {
        sum += tag_check(job->handed, OBJECT, job->handed_tag);
        free(job->handed);
    }
    for (uint64_t i = 0; i < job->iterations; i++) {
        volatile unsigned char *p = xmalloc(OBJECT);
        for (unsigned w = 0; w < WRITES; w++)
            for (unsigned b = 0; b < OBJECT; b++)
                p[b] = (unsigned char)(w + b + i + job->thread);
        for (unsigned b = 0; b < OBJECT; b++) {
            unsigned char want = (unsigned char)(WRITES - 1 + b + i + job->thread);
            if (p[b] != want)
                fail("object %p: byte %u is %u, expected %u", (void *)p, b, p[b], want);
            sum += p[b];
        }
        free((void *)p);
    }
    job->sum = sum;
    return NULL;
}

/* One phase; `scratch`: the main thread allocates the threads' first objects. */
static uint64_t phase(int scratch, uint64_t iterations)
{
    pthread_t th[THREADS];
    job_t job[THREADS];
    for (unsigned t = 0; t < THREADS; t++) {
        job[t] = (job_t){t, NULL, 0, iterations, 0};
        if (scratch) {
            job[t].handed = xmalloc(OBJECT);
            job[t].handed_tag = mix(t + 1);
            tag_write(job[t].handed, OBJECT, job[t].handed_tag);
        }
    }
    for (unsigned t = 0; t < THREADS; t++)
        xpthread_create(&th[t], worker, &job[t]);
    uint64_t sum = 0;
    for (unsigned t = 0; t < THREADS; t++) {
        xpthread_join(th[t]);
        sum += job[t].sum;
    }
    return sum;
}

int main(int argc, char **argv)
{
    double scale = parse_scale(argc, argv);
    uint64_t iterations = scaled(ITERATIONS, scale, 10);
    uint64_t sum = phase(0, iterations);
    sum += phase(1, iterations);
    report(sum);
    return 0;
}
