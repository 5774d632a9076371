/*
 * larson: the kind of load of Larson and Krishnan's server benchmark (larson): threads churn
 * the blocks of an array, and when a thread ends, the array passes to a new thread.
 *
 * THREADS arrays of SLOTS blocks of 8 – 1,000 bytes (uniform) are filled by the main thread.
 * Then GENERATIONS generations of THREADS threads run one after the other; in generation g,
 * thread t takes array (t + g) mod THREADS, which a thread of the previous generation churned,
 * and replaces REPLACEMENTS random slots of it: the block there is checked and freed (most were
 * allocated by another, finished thread), a new one of a random size allocated and tagged.
 * The main thread checks and frees what is left. The checksum sums the tags of the blocks freed.
 */
#define PROGRAM "larson"
#include "common.h"

#define THREADS 2
#define SLOTS 1000
#define GENERATIONS 40
#define REPLACEMENTS 100000

typedef struct {
    void *ptr[SLOTS];
    uint32_t len[SLOTS];
    uint64_t tag[SLOTS];
} array_t;

typedef struct {
    array_t *array;
    uint64_t generation, replacements, sum;
    unsigned thread;
} job_t;

static void put(array_t *a, uint32_t s, rng_t *r, uint64_t tag)
{
    a->len[s] = 8 + (uint32_t)rng_below(r, 993);
    a->tag[s] = tag;
    a->ptr[s] = xmalloc(a->len[s]);
    tag_write(a->ptr[s], a->len[s], tag);
}

static uint64_t drop(array_t *a, uint32_t s)
{
    uint64_t t = tag_check(a->ptr[s], a->len[s], a->tag[s]);
    free(a->ptr[s]);
    return t;
}

static void *worker(void *arg)
{
    job_t *job = arg;
    rng_t r = rng_seed(1000 * job->generation + job->thread + 300);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < job->replacements; i++) {
        uint32_t s = (uint32_t)rng_below(&r, SLOTS);
        sum += drop(job->array, s);
        put(job->array, s, &r, mix((job->generation << 40) ^ ((uint64_t)job->thread << 32) ^ i));
    }
    job->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = parse_scale(argc, argv);
    uint64_t replacements = scaled(REPLACEMENTS, scale, 100);
    array_t *arrays[THREADS];
    rng_t r = rng_seed(3);
    for (unsigned t = 0; t < THREADS; t++) {
        arrays[t] = xmalloc(sizeof *arrays[t]);
        for (uint32_t s = 0; s < SLOTS; s++)
            put(arrays[t], s, &r, mix(((uint64_t)t << 32) ^ s));
    }
    uint64_t sum = 0;
    for (uint64_t g = 0; g < GENERATIONS; g++) {
        pthread_t th[THREADS];
        job_t job[THREADS];
        for (unsigned t = 0; t < THREADS; t++) {
            job[t] = (job_t){arrays[(t + g) % THREADS], g + 1, replacements, 0, t};
            xpthread_create(&th[t], worker, &job[t]);
        }
        for (unsigned t = 0; t < THREADS; t++) {
            xpthread_join(th[t]);
            sum += job[t].sum;
        }
    }
    for (unsigned t = 0; t < THREADS; t++) {
        for (uint32_t s = 0; s < SLOTS; s++)
            sum += drop(arrays[t], s);
        free(arrays[t]);
    }
    report(sum);
    return 0;
}
