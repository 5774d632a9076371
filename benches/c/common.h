/*
 * What every C program of `cargo xtask bench-matrix` shares (docs/benchmarks.md, "C programs").
 *
 * Each program is one workload, run as `PROGRAM [SCALE]` in a fresh process under the
 * contender's LD_PRELOAD library: SCALE, a number in (0, 1] (default 1), multiplies its iteration
 * count. Its inputs come from a fixed-seed xorshift generator, so every run of a workload at a
 * given scale does the same work whatever the allocator, and its checksum is the same. It checks
 * its own results (a tag written into every block is verified before the block is freed): a
 * broken allocator makes it print `PROGRAM: FAILED: …` on stderr and exit with status 1. A
 * passing run prints one line and exits 0:
 *
 *   NAME checksum=HEX16 hakmem_mode=MODE|none allocator=hakmem|mimalloc|jemalloc|glibc
 *        peak_rss_kib=N
 *
 * `hakmem_mode` is what hakmem's `hakmem_mode()` says (found with dlsym; `none` without hakmem)
 * and `allocator` which malloc the process really got, so that the matrix can tell that the
 * intended library was loaded. `peak_rss_kib` is the peak resident set of the program's address
 * space (VmHWM of /proc/self/status): unlike the ru_maxrss that wait4 reports, it does not
 * include the resident set of the process that spawned the program (a child shares or copies
 * its parent's address space until it execs, and ru_maxrss keeps that peak across the exec).
 */
#ifndef HAKMEM_BENCH_C_COMMON_H
#define HAKMEM_BENCH_C_COMMON_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The program's name, for its messages (each program defines it before including this file). */
#ifndef PROGRAM
#error "define PROGRAM before including common.h"
#endif

/* Prints `PROGRAM: FAILED: …` on stderr and exits with status 1 (from any thread). */
__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: FAILED: ", PROGRAM);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    exit(1);
}

/* ---- the generator: xorshift64* ----------------------------------------------------------- */

typedef struct {
    uint64_t s;
} rng_t;

/* A generator for stream `stream` of the program (every thread has its own). */
static inline rng_t rng_seed(uint64_t stream)
{
    rng_t r = {0x9E3779B97F4A7C15ull ^ (stream * 0xD1B54A32D192ED03ull + 0x2545F4914F6CDD1Dull)};
    if (r.s == 0)
        r.s = 1;
    return r;
}

static inline uint64_t rng_next(rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A number in [0, n), n > 0. */
static inline uint64_t rng_below(rng_t *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* A 64-bit value that depends on every bit of x (a tag for a block). */
static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x | 1;
}

/* ---- the command line ---------------------------------------------------------------------- */

/* SCALE from `argv[1]` (default 1); anything but a number in (0, 1] exits with status 2. */
static double parse_scale(int argc, char **argv)
{
    if (argc > 2) {
        fprintf(stderr, "usage: %s [SCALE]\n", PROGRAM);
        exit(2);
    }
    if (argc < 2)
        return 1.0;
    char *end = NULL;
    errno = 0;
    double f = strtod(argv[1], &end);
    if (errno != 0 || end == argv[1] || *end != '\0' || !(f > 0.0 && f <= 1.0)) {
        fprintf(stderr, "%s: SCALE must be a number in (0, 1], not `%s`\n", PROGRAM, argv[1]);
        exit(2);
    }
    return f;
}

/* `n` × `scale`, at least `floor`. */
static inline uint64_t scaled(uint64_t n, double scale, uint64_t floor)
{
    uint64_t x = (uint64_t)((double)n * scale + 0.5);
    return x < floor ? floor : x;
}

/* ---- blocks and their tags ----------------------------------------------------------------- */

/* malloc that fails the run on NULL. */
static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        fail("malloc(%zu) returned NULL", n);
    return p;
}

/* Writes `tag` into the block: its first 8 bytes and its last 8 (as much as fits if smaller). */
static inline void tag_write(void *p, size_t n, uint64_t tag)
{
    unsigned char *b = p;
    if (n >= 16) {
        uint64_t tail = ~tag;
        memcpy(b, &tag, 8);
        memcpy(b + n - 8, &tail, 8);
    } else {
        for (size_t i = 0; i < n; i++)
            b[i] = (unsigned char)(tag >> (8 * (i & 7)));
    }
}

/* Fails the run unless the block still holds what tag_write(p, n, tag) wrote; returns `tag`. */
static inline uint64_t tag_check(const void *p, size_t n, uint64_t tag)
{
    const unsigned char *b = p;
    int ok = 1;
    if (n >= 16) {
        uint64_t head, tail;
        memcpy(&head, b, 8);
        memcpy(&tail, b + n - 8, 8);
        ok = head == tag && tail == ~tag;
    } else {
        for (size_t i = 0; i < n; i++)
            ok &= b[i] == (unsigned char)(tag >> (8 * (i & 7)));
    }
    if (!ok)
        fail("block %p of %zu bytes was overwritten while live (tag %016llx)", p, n,
             (unsigned long long)tag);
    return tag;
}

/* ---- threads ------------------------------------------------------------------------------- */

static inline void xpthread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int e = pthread_create(t, NULL, fn, arg);
    if (e != 0)
        fail("pthread_create: %s", strerror(e));
}

static inline void xpthread_join(pthread_t t)
{
    int e = pthread_join(t, NULL);
    if (e != 0)
        fail("pthread_join: %s", strerror(e));
}

/* ---- the result line ----------------------------------------------------------------------- */

/* A symbol of the process (any loaded library), or NULL. */
static void *symbol(const char *name)
{
    return dlsym(RTLD_DEFAULT, name);
}

/* VmHWM of /proc/self/status, in KiB (0 if it cannot be read). */
static unsigned long long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmHWM: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Prints the result line (see the top of this file) and flushes it. */
static void report(uint64_t checksum)
{
    const char *mode = "none";
    const char *allocator = "glibc";
    void *f = symbol("hakmem_mode");
    if (f != NULL) {
        const char *(*hakmem_mode)(void);
        memcpy(&hakmem_mode, &f, sizeof f);
        mode = hakmem_mode();
        allocator = "hakmem";
    } else if (symbol("mi_version") != NULL) {
        allocator = "mimalloc";
    } else if (symbol("mallctl") != NULL) {
        allocator = "jemalloc";
    }
    printf("%s checksum=%016llx hakmem_mode=%s allocator=%s peak_rss_kib=%llu\n", PROGRAM,
           (unsigned long long)checksum, mode, allocator, peak_rss_kib());
    fflush(stdout);
}

#endif
