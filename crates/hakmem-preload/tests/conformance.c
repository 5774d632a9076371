/*
 * The malloc contract a drop-in replacement for glibc's allocator must keep, section by
 * section (docs/preload.md). Written from the contract (the glibc manual, the malloc(3),
 * posix_memalign(3), malloc_usable_size(3) and reallocarray(3) manual pages, and glibc 2.36's
 * documented behaviour), not from any implementation's tests.
 *
 * It must pass on plain glibc, without LD_PRELOAD (`cargo xtask preload --check` runs it there
 * first): that is what makes it a test of the contract rather than of hakmem. Then it runs
 * under every hakmem mode.
 *
 *   conformance
 *
 * Prints one line per section on stdout (`ok 3 realloc … (N checks)` or `FAILED …`), one
 * machine-readable `failed-malloc-ns: N` line (section 9, a measurement, never a failure) and
 * last `conformance: N passed, M failed`. Every failed check prints `FAIL [section] func:line:
 * condition message` on stderr, and the run goes on to the end; the exit status is 1 if any
 * check failed. A passing run writes nothing to stderr. Sections 7 and 8 run in forked children
 * (RLIMIT_AS, the map-count limit), each under alarm(): nothing can hang.
 *
 * Sections:
 *  1 every entry point's success and failure: return value and errno (ENOMEM, EINVAL)
 *  2 free: free(NULL) is a no-op; free leaves errno alone for every kind of block
 *  3 realloc: NULL, 0, grow and shrink across sizes (contents kept), failure keeps the block
 *  4 calloc zeroes (recycled memory too), calloc and reallocarray overflow
 *  5 alignments 16 B to 64 MiB for memalign, posix_memalign, aligned_alloc; valloc, pvalloc
 *  6 malloc_usable_size: at least the request, every usable byte the program's
 *  7 recovery after exhaustion under RLIMIT_AS (child)
 *  8 a free whose munmap the kernel refuses at the map-count limit (child)
 *  9 the cost of a failed allocation: reported, not asserted
 *
 * Where glibc's behaviour is an implementation detail a replacement need not copy, it is not
 * asserted; each such place says so in a comment (marked "Not asserted").
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE /* usable bytes past the request are written on purpose (section 6) */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- checks ---------------------------------------------------------------------------------- */

static long passed, failed;               /* the whole run (this process) */
static long section_checks, section_failed; /* the current section */
static const char *section = "?";

static const char *errname(int e) {
    switch (e) {
    case 0:
        return "0";
    case ENOMEM:
        return "ENOMEM";
    case EINVAL:
        return "EINVAL";
    case EDOM:
        return "EDOM (the sentinel)";
    case ERANGE:
        return "ERANGE";
    case EFAULT:
        return "EFAULT";
    case EAGAIN:
        return "EAGAIN";
    default:
        return "another value";
    }
}

/* Failures printed per section; the rest are counted. */
#define MAX_REPORTED 8

/* Records one check; on failure prints `FAIL [section] func:line: `cond` message` on stderr
 * (unbuffered: glibc formats it on the stack, no allocation). Returns `ok`. */
static int __attribute__((format(printf, 5, 6)))
check_(int ok, const char *func, int line, const char *cond, const char *fmt, ...) {
    section_checks++;
    if (ok) {
        passed++;
        return 1;
    }
    failed++;
    section_failed++;
    if (section_failed > MAX_REPORTED) {
        if (section_failed == MAX_REPORTED + 1)
            fprintf(stderr, "FAIL [%s] ... more failures in this section not shown\n", section);
        return 0;
    }
    fprintf(stderr, "FAIL [%s] %s:%d: `%s`", section, func, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 0;
}

/* CHECK(condition) or CHECK(condition, "format", args…); evaluates to whether it held, so that
 * a failed check can skip what would then crash: `if (!CHECK(p != NULL)) return;`. */
#define CHECK(cond, ...) check_((cond) != 0, __func__, __LINE__, #cond, " " __VA_ARGS__)

static uint64_t now_ns(void);
static uint64_t section_start;

static void begin(const char *name) {
    section = name;
    section_checks = section_failed = 0;
    section_start = now_ns();
}

/* The section's line on stdout, with `note` (may be empty) in the parentheses. */
static void end(const char *note) {
    double took = (double)(now_ns() - section_start) / 1e9;
    if (section_failed == 0)
        printf("ok %s (%ld checks, %.2f s%s%s)\n", section, section_checks, took,
               *note ? "; " : "", note);
    else
        printf("FAILED %s (%ld of %ld checks failed, %.2f s%s%s)\n", section, section_failed,
               section_checks, took, *note ? "; " : "", note);
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* Sizes and alignments go through this so that the compiler cannot reason about them (it would
 * warn about, or fold, malloc(SIZE_MAX), or drop a malloc/free pair). */
static size_t __attribute__((noinline)) opaque(size_t n) {
    __asm__ volatile("" : "+r"(n));
    return n;
}

static int aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

static size_t page;    /* sysconf(_SC_PAGESIZE) */
static size_t refused; /* a request the kernel refuses: 3 TiB (see main) */

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* The pattern of a block filled with `seed`: 8-byte words, each a mix of its index and the
 * seed (byte i is byte i % 8, little-endian, of word i / 8), so that no shifted copy of a block
 * matches it. Written and compared a word at a time: the large blocks are 40 MiB. */
typedef uint64_t __attribute__((may_alias)) word_t;

static inline uint64_t wpat(size_t w, unsigned seed) {
    uint64_t x = (uint64_t)w * 0x9E3779B97F4A7C15u + (uint64_t)seed * 0xD1B54A32D192ED03u + 1;
    return x ^ (x >> 29);
}

static inline unsigned char pat(size_t i, unsigned seed) {
    return (unsigned char)(wpat(i / 8, seed) >> (i % 8 * 8));
}

/* Every block this program fills is at least 16-aligned, so the words are aligned. */
static void __attribute__((noinline)) fill(void *p, size_t n, unsigned seed) {
    unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        *(word_t *)(b + i) = wpat(i / 8, seed);
    for (; i < n; i++)
        b[i] = pat(i, seed);
}

/* The offset of the first byte that is not the pattern, or -1 if all `n` are. */
static long __attribute__((noinline)) bad_at(const void *p, size_t n, unsigned seed) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (*(const word_t *)(b + i) != wpat(i / 8, seed))
            break;
    for (; i < n; i++)
        if (b[i] != pat(i, seed))
            return (long)i;
    return -1;
}

static void __attribute__((noinline)) fill_byte(void *p, size_t n, unsigned char v) {
    unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        *(word_t *)(b + i) = 0x0101010101010101u * v;
    for (; i < n; i++)
        b[i] = v;
}

/* The offset of the first non-zero byte, or -1. */
static long __attribute__((noinline)) nonzero_at(const void *p, size_t n) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (*(const word_t *)(b + i))
            break;
    for (; i < n; i++)
        if (b[i])
            return (long)i;
    return -1;
}

static size_t round_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* free(p) must leave errno as it was; each call uses the next of three sentinels (EDOM, 0,
 * ERANGE), so that neither "set to 0" nor "restored to a fixed value" can pass by chance. */
static void free_keeps_errno(void *p, const char *kind, size_t n, size_t align) {
    static unsigned turn;
    const int sentinels[3] = {EDOM, 0, ERANGE};
    int before = sentinels[turn++ % 3];
    errno = before;
    free(p);
    int after = errno;
    CHECK(after == before, "free of %s (%zu B, alignment %zu) changed errno from %d to %d (%s)",
          kind, n, align, before, after, errname(after));
}

/* Allocation `call` must fail: NULL with errno `want`. errno is set to a sentinel first. A
 * block it returned anyway is freed. */
#define EXPECT_FAIL(want, call, what, ...)                                                     \
    do {                                                                                       \
        errno = EDOM;                                                                          \
        void *p_ = (call);                                                                     \
        int e_ = errno;                                                                        \
        CHECK(p_ == NULL && e_ == (want), what " = %p, errno %d (%s); expected NULL, %s",      \
              __VA_ARGS__, p_, e_, errname(e_), errname(want));                                \
        free(p_);                                                                              \
    } while (0)

/* The sizes most sections walk: tiny, pool classes, page edges, the 512 KiB threshold, mmap
 * sizes, BigCache classes and one above them. */
static const size_t SIZES[] = {1,          8,        15,       16,       17,      24,
                               100,        1000,     4095,     4096,     4097,    65536,
                               200000,     524287,   524288,   1 << 20,  3 << 20, 16 << 20,
                               (16 << 20) + 1, 40 << 20};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])

/* Sizes that must fail on a 64-bit system, whatever the allocator: past PTRDIFF_MAX, or more
 * address space than there is (1 PiB), or more than the kernel lends (`refused`, 3 TiB). */
static size_t HUGE[8];
static size_t NHUGE;

static void init_huge(void) {
    const size_t v[] = {SIZE_MAX,    SIZE_MAX - 15,          SIZE_MAX / 2 + 1, SIZE_MAX / 2,
                        PTRDIFF_MAX, (size_t)PTRDIFF_MAX - 4096, (size_t)1 << 50, refused};
    NHUGE = sizeof v / sizeof v[0];
    memcpy(HUGE, v, sizeof v);
}

/* ---- 1. every entry point: success and failure, return value and errno ---------------------- */

/* Not asserted: a successful call's effect on errno, anywhere. C and POSIX let a successful
 * call change errno, and glibc's malloc may (a failed mmap it recovered from). */
static void s1_entry_points(void) {
    begin("1 entry points: success, failure, errno");
    void *p, *q;
    int rc;

    /* Success: a usable block, aligned as promised. */
    p = malloc(opaque(100));
    CHECK(p != NULL && aligned(p, 16), "malloc(100) = %p", p);
    free(p);
    p = calloc(opaque(10), 10);
    CHECK(p != NULL && aligned(p, 16) && nonzero_at(p, 100) < 0, "calloc(10, 10) = %p", p);
    free(p);
    p = realloc(NULL, opaque(100));
    CHECK(p != NULL && aligned(p, 16), "realloc(NULL, 100) = %p", p);
    q = realloc(p, opaque(200));
    CHECK(q != NULL && aligned(q, 16), "realloc(p, 200) = %p", q);
    free(q ? q : p);
    p = reallocarray(NULL, opaque(10), 10);
    CHECK(p != NULL && aligned(p, 16), "reallocarray(NULL, 10, 10) = %p", p);
    free(p);
    p = memalign(opaque(64), 100);
    CHECK(p != NULL && aligned(p, 64), "memalign(64, 100) = %p", p);
    free(p);
    p = aligned_alloc(opaque(64), 128);
    CHECK(p != NULL && aligned(p, 64), "aligned_alloc(64, 128) = %p", p);
    free(p);
    p = valloc(opaque(100));
    CHECK(p != NULL && aligned(p, page), "valloc(100) = %p", p);
    free(p);
    p = pvalloc(opaque(100));
    CHECK(p != NULL && aligned(p, page), "pvalloc(100) = %p", p);
    free(p);
    p = NULL;
    rc = posix_memalign(&p, opaque(64), 100);
    CHECK(rc == 0 && p != NULL && aligned(p, 64), "posix_memalign(64, 100) = %d, %p", rc, p);
    free(p);

    /* Failure for lack of memory: NULL and ENOMEM, from every entry point. */
    for (size_t i = 0; i < NHUGE; i++) {
        size_t n = opaque(HUGE[i]);
        EXPECT_FAIL(ENOMEM, malloc(n), "malloc(%zu)", n);
        EXPECT_FAIL(ENOMEM, calloc(opaque(1), n), "calloc(1, %zu)", n);
        EXPECT_FAIL(ENOMEM, calloc(n, opaque(1)), "calloc(%zu, 1)", n);
        EXPECT_FAIL(ENOMEM, realloc(NULL, n), "realloc(NULL, %zu)", n);
        EXPECT_FAIL(ENOMEM, reallocarray(NULL, n, opaque(1)), "reallocarray(NULL, %zu, 1)", n);
        EXPECT_FAIL(ENOMEM, reallocarray(NULL, opaque(1), n), "reallocarray(NULL, 1, %zu)", n);
        EXPECT_FAIL(ENOMEM, memalign(opaque(64), n), "memalign(64, %zu)", n);
        EXPECT_FAIL(ENOMEM, memalign(opaque(2 * MiB), n), "memalign(2 MiB, %zu)", n);
        EXPECT_FAIL(ENOMEM, aligned_alloc(opaque(64), n), "aligned_alloc(64, %zu)", n);
        EXPECT_FAIL(ENOMEM, valloc(n), "valloc(%zu)", n);
        EXPECT_FAIL(ENOMEM, pvalloc(n), "pvalloc(%zu)", n);
        /* posix_memalign returns the error; *out stays unwritten; and errno is ENOMEM too, as
         * glibc leaves it (its allocation failed with ENOMEM). */
        void *const sentinel = (void *)0x1234;
        const size_t aligns[] = {16, 64, 4096, 2 * MiB};
        for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
            p = sentinel;
            errno = EDOM;
            rc = posix_memalign(&p, opaque(aligns[a]), n);
            int e = errno;
            CHECK(rc == ENOMEM && p == sentinel && e == ENOMEM,
                  "posix_memalign(&p, %zu, %zu) = %d (%s), p %s, errno %d (%s); expected ENOMEM, "
                  "p unwritten, errno ENOMEM",
                  aligns[a], n, rc, errname(rc), p == sentinel ? "unwritten" : "written", e,
                  errname(e));
            if (rc == 0 && p != sentinel)
                free(p);
        }
    }
    /* An alignment too large to be served: memalign & co. fail with ENOMEM up to SIZE_MAX/2+1
     * (a power of two, just not available) and with EINVAL above it (not an alignment). */
    const size_t vast[] = {(size_t)1 << 62, SIZE_MAX / 2 + 1};
    for (size_t i = 0; i < 2; i++) {
        size_t a = opaque(vast[i]);
        EXPECT_FAIL(ENOMEM, memalign(a, opaque(1)), "memalign(%zu, 1)", a);
        EXPECT_FAIL(ENOMEM, aligned_alloc(a, opaque(1)), "aligned_alloc(%zu, 1)", a);
        void *const sentinel = (void *)0x1234;
        p = sentinel;
        errno = EDOM;
        rc = posix_memalign(&p, a, 1);
        int e = errno;
        CHECK(rc == ENOMEM && p == sentinel && e == ENOMEM,
              "posix_memalign(&p, %zu, 1) = %d (%s), errno %d (%s); expected ENOMEM twice", a, rc,
              errname(rc), e, errname(e));
    }
    const size_t invalid[] = {SIZE_MAX / 2 + 2, SIZE_MAX / 2 + 4096, SIZE_MAX - 1, SIZE_MAX};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        size_t a = opaque(invalid[i]);
        EXPECT_FAIL(EINVAL, memalign(a, opaque(1)), "memalign(%zu, 1)", a);
        EXPECT_FAIL(EINVAL, aligned_alloc(a, opaque(1)), "aligned_alloc(%zu, 1)", a);
        EXPECT_FAIL(EINVAL, memalign(a, opaque(SIZE_MAX)), "memalign(%zu, SIZE_MAX)", a);
    }
    /* posix_memalign with an alignment that is not a power-of-two multiple of sizeof(void *):
     * EINVAL returned, *out unwritten, errno untouched (glibc checks before allocating). */
    const size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 40, 48, 4097, 3 * 4096, SIZE_MAX, SIZE_MAX / 2};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const size_t sizes[] = {1, 100, 3 * MiB, SIZE_MAX};
        for (size_t s = 0; s < 4; s++) {
            void *const sentinel = (void *)0x1234;
            p = sentinel;
            errno = EDOM;
            rc = posix_memalign(&p, opaque(bad[i]), opaque(sizes[s]));
            int e = errno;
            CHECK(rc == EINVAL && p == sentinel && e == EDOM,
                  "posix_memalign(&p, %zu, %zu) = %d (%s), p %s, errno %d (%s); expected EINVAL, "
                  "p unwritten, errno untouched",
                  bad[i], sizes[s], rc, errname(rc), p == sentinel ? "unwritten" : "written", e,
                  errname(e));
            if (rc == 0 && p != sentinel)
                free(p);
        }
    }
    end("");
}

/* ---- 2. free --------------------------------------------------------------------------------- */

static void s2_free(void) {
    begin("2 free: NULL, errno kept for every kind of block");
    errno = EDOM;
    free(NULL);
    CHECK(errno == EDOM, "free(NULL) changed errno to %d", errno);
    errno = 0;
    free(NULL);
    CHECK(errno == 0, "free(NULL) changed errno to %d", errno);

    /* Small (pool classes in FAST and BALANCED), medium, large (mmap; 600 KiB to 16 MiB are
     * BigCache classes, 48 MiB is above them). Two blocks of each size, freed one after the
     * other: the second free finds the cache already holding the first. */
    const size_t sizes[] = {16,        24,        32,        48,        64,       100,
                            128,       256,       512,       1000,      1024,     100 * KiB,
                            400 * KiB, 600 * KiB, 1 * MiB,   3 * MiB,   8 * MiB,  48 * MiB};
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t n = opaque(sizes[i]);
            void *a = malloc(n), *b = malloc(n);
            if (!CHECK(a != NULL && b != NULL, "malloc(%zu) twice: %p, %p", n, a, b)) {
                free(a);
                free(b);
                continue;
            }
            fill(a, n, 1);
            fill(b, n, 2);
            free_keeps_errno(a, "a malloc'd block", n, 0);
            free_keeps_errno(b, "a malloc'd block (the second of its size)", n, 0);
        }
    }
    /* Over-aligned blocks, small and large. */
    const size_t aligns[] = {64, 4096, 65536, 2 * MiB};
    const size_t asizes[] = {100, 5000, 700 * KiB, 3 * MiB};
    for (size_t a = 0; a < 4; a++) {
        for (size_t s = 0; s < 4; s++) {
            void *x = memalign(opaque(aligns[a]), opaque(asizes[s]));
            void *y = memalign(opaque(aligns[a]), opaque(asizes[s]));
            if (!CHECK(x != NULL && y != NULL, "memalign(%zu, %zu)", aligns[a], asizes[s])) {
                free(x);
                free(y);
                continue;
            }
            fill(x, asizes[s], 3);
            fill(y, asizes[s], 4);
            free_keeps_errno(x, "a memalign'd block", asizes[s], aligns[a]);
            free_keeps_errno(y, "a memalign'd block (the second)", asizes[s], aligns[a]);
        }
    }
    /* Every other entry point's blocks. */
    const size_t csizes[] = {100, 100 * KiB, 1 * MiB, 8 * MiB};
    for (size_t s = 0; s < 4; s++) {
        void *c = calloc(opaque(1), csizes[s]);
        if (CHECK(c != NULL, "calloc(1, %zu)", csizes[s]))
            free_keeps_errno(c, "a calloc'd block", csizes[s], 0);
    }
    void *p = NULL;
    if (CHECK(posix_memalign(&p, opaque(4096), 1000) == 0))
        free_keeps_errno(p, "a posix_memalign'd block", 1000, 4096);
    p = NULL;
    if (CHECK(posix_memalign(&p, opaque(64), 2 * MiB) == 0))
        free_keeps_errno(p, "a posix_memalign'd block", 2 * MiB, 64);
    p = aligned_alloc(opaque(256), 4096);
    if (CHECK(p != NULL))
        free_keeps_errno(p, "an aligned_alloc'd block", 4096, 256);
    p = valloc(opaque(1000));
    if (CHECK(p != NULL))
        free_keeps_errno(p, "a valloc'd block", 1000, page);
    p = pvalloc(opaque(5000));
    if (CHECK(p != NULL))
        free_keeps_errno(p, "a pvalloc'd block", 5000, page);
    p = reallocarray(NULL, opaque(100), 10);
    if (CHECK(p != NULL))
        free_keeps_errno(p, "a reallocarray'd block", 1000, 0);
    /* realloc'd: grown small -> large -> larger, shrunk large -> small; freed at each stage. */
    const size_t steps[][2] = {{100, 200}, {100, 700 * KiB}, {700 * KiB, 5 * MiB},
                               {5 * MiB, 1000}, {700 * KiB, 600 * KiB}, {40 * MiB, 100}};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        void *x = malloc(opaque(steps[i][0]));
        if (!CHECK(x != NULL))
            continue;
        void *y = realloc(x, opaque(steps[i][1]));
        if (CHECK(y != NULL, "realloc(%zu -> %zu)", steps[i][0], steps[i][1]))
            free_keeps_errno(y, "a realloc'd block", steps[i][1], 0);
        else
            free(x);
    }
    end("");
}

/* ---- 3. realloc ------------------------------------------------------------------------------ */

static void s3_realloc(void) {
    begin("3 realloc: NULL, 0, grow and shrink, failure");
    /* realloc(NULL, n) is malloc(n), n = 0 included. */
    const size_t fresh[] = {0, 1, 100, 700 * KiB, 5 * MiB};
    for (size_t i = 0; i < 5; i++) {
        void *p = realloc(NULL, opaque(fresh[i]));
        if (CHECK(p != NULL && aligned(p, 16), "realloc(NULL, %zu) = %p", fresh[i], p)) {
            CHECK(malloc_usable_size(p) >= fresh[i]);
            fill(p, fresh[i], 5);
        }
        free(p);
    }

    /* realloc(p, 0) frees p and returns NULL, errno untouched (glibc 2.36: it is not a failure).
     * Blocks of every kind. */
    for (int kind = 0; kind < 6; kind++) {
        void *p;
        switch (kind) {
        case 0: p = malloc(opaque(100)); break;
        case 1: p = malloc(opaque(700 * KiB)); break;
        case 2: p = malloc(opaque(5 * MiB)); break;
        case 3: p = memalign(opaque(4096), 100); break;
        case 4: p = calloc(opaque(1), 1000); break;
        default: p = memalign(opaque(2 * MiB), 3 * MiB); break;
        }
        if (!CHECK(p != NULL, "block kind %d", kind))
            continue;
        errno = EDOM;
        void *q = realloc(p, opaque(0));
        int e = errno;
        CHECK(q == NULL && e == EDOM,
              "realloc(p, 0) of block kind %d = %p, errno %d (%s); expected NULL, errno untouched",
              kind, q, e, errname(e));
        free(q); /* if it returned a block after all */
    }
    /* reallocarray(p, 0, n) and (p, n, 0) are realloc(p, 0). */
    for (int k = 0; k < 2; k++) {
        void *p = malloc(opaque(100));
        if (!CHECK(p != NULL))
            continue;
        errno = EDOM;
        void *q = k ? reallocarray(p, opaque(0), 100) : reallocarray(p, opaque(100), 0);
        int e = errno;
        CHECK(q == NULL && e == EDOM, "reallocarray(p, %s) = %p, errno %d (%s)",
              k ? "0, 100" : "100, 0", q, e, errname(e));
        free(q);
    }

    /* Grow and shrink between every pair of sizes: small -> small, small -> large, large ->
     * small, large -> larger, larger -> large, and each to itself. The common prefix must
     * survive, byte by byte; the new block is 16-aligned and has the new size. */
    const size_t sizes[] = {100, 4 * KiB, 700 * KiB, 5 * MiB, 40 * MiB};
    const int ns = sizeof sizes / sizeof sizes[0];
    for (int i = 0; i < ns; i++) {
        for (int j = 0; j < ns; j++) {
            size_t from = sizes[i], to = sizes[j], keep = from < to ? from : to;
            unsigned seed = (unsigned)(i * 7 + j);
            unsigned char *p = malloc(opaque(from));
            if (!CHECK(p != NULL, "malloc(%zu)", from))
                continue;
            fill(p, from, seed);
            unsigned char *q = realloc(p, opaque(to));
            if (!CHECK(q != NULL, "realloc(%zu -> %zu)", from, to)) {
                free(p);
                continue;
            }
            long bad = bad_at(q, keep, seed);
            CHECK(bad < 0, "realloc(%zu -> %zu) lost the contents: byte %ld of %zu differs", from,
                  to, bad, keep);
            CHECK(aligned(q, 16) && malloc_usable_size(q) >= to,
                  "realloc(%zu -> %zu) = %p, usable %zu", from, to, (void *)q,
                  malloc_usable_size(q));
            fill(q, to, seed + 1);
            CHECK(bad_at(q, to, seed + 1) < 0);
            free(q);
        }
    }
    /* A chain of reallocs on one block across the small/large boundary and back. */
    static const size_t steps[] = {1,        100,     5000,    600000, 1 << 20, 9 << 20,
                                   40 << 20, 2 << 20, 700000, 3000,   33,      1 << 21};
    unsigned char *p = realloc(NULL, opaque(steps[0]));
    if (CHECK(p != NULL)) {
        fill(p, steps[0], 7);
        for (size_t i = 1; i < sizeof steps / sizeof steps[0] && p; i++) {
            size_t old = steps[i - 1], n = steps[i];
            unsigned char *q = realloc(p, opaque(n));
            if (!CHECK(q != NULL, "realloc chain: %zu -> %zu", old, n))
                break;
            long bad = bad_at(q, old < n ? old : n, 7);
            CHECK(bad < 0, "realloc chain %zu -> %zu: byte %ld differs", old, n, bad);
            fill(q, n, 7);
            p = q;
        }
        free(p);
    }
    /* Over-aligned blocks reallocate into 16-aligned ones, contents kept (realloc promises no
     * more than malloc's alignment). */
    const size_t al[][3] = {{4096, 100, 5000},          {65536, 100 * KiB, 700 * KiB},
                            {2 * MiB, 3 * MiB, 100},    {64, 1000, 40 * MiB},
                            {65536, 700 * KiB, 64 * KiB}};
    for (size_t i = 0; i < sizeof al / sizeof al[0]; i++) {
        unsigned char *a = memalign(opaque(al[i][0]), al[i][1]);
        if (!CHECK(a != NULL && aligned(a, al[i][0])))
            continue;
        fill(a, al[i][1], 9);
        unsigned char *q = realloc(a, opaque(al[i][2]));
        if (!CHECK(q != NULL && aligned(q, 16), "realloc of memalign(%zu, %zu) to %zu", al[i][0],
                   al[i][1], al[i][2])) {
            free(q ? q : a);
            continue;
        }
        size_t keep = al[i][1] < al[i][2] ? al[i][1] : al[i][2];
        long bad = bad_at(q, keep, 9);
        CHECK(bad < 0, "realloc of memalign(%zu, %zu) to %zu: byte %ld differs", al[i][0],
              al[i][1], al[i][2], bad);
        free(q);
    }

    /* A failing realloc returns NULL with ENOMEM and leaves the old block as it was: intact,
     * writable and freeable. Small, large and over-aligned old blocks. */
    const size_t olds[] = {100, 4 * KiB, 700 * KiB, 5 * MiB};
    const size_t news[] = {SIZE_MAX, SIZE_MAX - 15, SIZE_MAX / 2, PTRDIFF_MAX, (size_t)1 << 50,
                           refused};
    for (size_t i = 0; i < 5; i++) {
        for (size_t j = 0; j < sizeof news / sizeof news[0]; j++) {
            size_t old = i < 4 ? olds[i] : 100 * KiB;
            unsigned char *b = i < 4 ? malloc(opaque(old)) : memalign(opaque(65536), old);
            if (!CHECK(b != NULL))
                continue;
            fill(b, old, 11);
            errno = EDOM;
            unsigned char *q = realloc(b, opaque(news[j]));
            int e = errno;
            if (!CHECK(q == NULL && e == ENOMEM,
                       "realloc(%zu B block%s, %zu) = %p, errno %d (%s); expected NULL, ENOMEM",
                       old, i < 4 ? "" : " aligned to 64 KiB", news[j], (void *)q, e,
                       errname(e))) {
                free(q ? q : b);
                continue;
            }
            long bad = bad_at(b, old, 11);
            CHECK(bad < 0, "a failed realloc(%zu B block, %zu) changed byte %ld of it", old,
                  news[j], bad);
            fill(b, old, 12); /* still the program's */
            CHECK(bad_at(b, old, 12) < 0);
            free_keeps_errno(b, "a block whose realloc failed", old, 0);
        }
    }
    end("");
}

/* ---- 4. calloc, reallocarray ----------------------------------------------------------------- */

static void s4_calloc(void) {
    begin("4 calloc zeroes; calloc and reallocarray overflow");
    /* Recycled memory comes back zeroed: dirty a block, free it, calloc the same size. */
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = SIZES[i];
        unsigned char *p = malloc(opaque(n));
        if (!CHECK(p != NULL, "malloc(%zu)", n))
            continue;
        fill_byte(p, malloc_usable_size(p), 0xFF);
        free(p);
        for (int k = 0; k < 2; k++) {
            unsigned char *q = k ? calloc(opaque(n), 1) : calloc(opaque(1), n);
            if (!CHECK(q != NULL && aligned(q, 16), "calloc of %zu bytes", n))
                continue;
            long nz = nonzero_at(q, n);
            CHECK(nz < 0, "calloc(%s) after a dirty block of that size: byte %ld is not zero",
                  k ? "n, 1" : "1, n", nz);
            fill_byte(q, n, 0xEE);
            free(q);
        }
    }
    /* Large blocks kept in a cache after the free: the calloc that reuses one still zeroes it.
     * Two dirty blocks per size, freed; then two callocs of the same size. */
    const size_t large[] = {600 * KiB, 1 * MiB, 2 * MiB, 3 * MiB, 8 * MiB, 16 * MiB, 48 * MiB};
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++) {
        size_t n = large[i];
        unsigned char *a = malloc(opaque(n)), *b = malloc(opaque(n));
        if (!CHECK(a && b, "malloc(%zu) twice", n)) {
            free(a);
            free(b);
            continue;
        }
        fill_byte(a, malloc_usable_size(a), 0xA5);
        fill_byte(b, malloc_usable_size(b), 0x5A);
        free(a);
        free(b);
        unsigned char *c = calloc(opaque(1), n), *d = calloc(opaque(n), 1);
        if (CHECK(c && d, "calloc of %zu bytes twice", n)) {
            long zc = nonzero_at(c, n), zd = nonzero_at(d, n);
            CHECK(zc < 0 && zd < 0, "calloc(%zu) after freeing dirty blocks of that size: byte "
                  "%ld / %ld is not zero", n, zc, zd);
        }
        free(c);
        free(d);
    }
    /* Small blocks, many per class (the pool's free lists in FAST and BALANCED). */
    const size_t small[] = {16, 24, 32, 48, 64, 100, 256, 512, 1024};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        void *blocks[64];
        for (int k = 0; k < 64; k++) {
            blocks[k] = malloc(opaque(small[i]));
            if (blocks[k])
                fill_byte(blocks[k], small[i], 0xC3);
        }
        for (int k = 0; k < 64; k++)
            free(blocks[k]);
        int dirty = 0;
        for (int k = 0; k < 64; k++) {
            blocks[k] = calloc(opaque(1), small[i]);
            dirty += blocks[k] == NULL || nonzero_at(blocks[k], small[i]) >= 0;
        }
        CHECK(dirty == 0, "%d of 64 callocs of %zu bytes after freeing dirty ones: NULL or not "
              "zeroed", dirty, small[i]);
        for (int k = 0; k < 64; k++)
            free(blocks[k]);
    }
    /* calloc of 0 bytes: unique pointers. */
    void *a = calloc(opaque(0), 8), *b = calloc(8, opaque(0)), *c = calloc(opaque(0), 0);
    CHECK(a && b && c && a != b && b != c && a != c, "calloc of 0 bytes: %p, %p, %p", a, b, c);
    free(a);
    free(b);
    free(c);
    /* Overflowing products, and a product that does not overflow but is refused. */
    const size_t pairs[][2] = {{SIZE_MAX / 2 + 1, 2}, {2, SIZE_MAX / 2 + 1}, {SIZE_MAX, SIZE_MAX},
                               {SIZE_MAX, 2},         {(size_t)1 << 33, (size_t)1 << 31},
                               {(size_t)1 << 32, (size_t)1 << 32}, {refused / 4096, 4096},
                               {4096, refused / 4096}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        size_t x = opaque(pairs[i][0]), y = opaque(pairs[i][1]);
        EXPECT_FAIL(ENOMEM, calloc(x, y), "calloc(%zu, %zu)", x, y);
        EXPECT_FAIL(ENOMEM, reallocarray(NULL, x, y), "reallocarray(NULL, %zu, %zu)", x, y);
    }
    /* reallocarray: grows like realloc; an overflowing or refused product leaves the block. */
    unsigned char *p = reallocarray(NULL, opaque(10), 10);
    if (CHECK(p != NULL)) {
        fill(p, 100, 3);
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
            errno = EDOM;
            void *q = reallocarray(p, opaque(pairs[i][0]), opaque(pairs[i][1]));
            int e = errno;
            CHECK(q == NULL && e == ENOMEM, "reallocarray(p, %zu, %zu) = %p, errno %d (%s)",
                  pairs[i][0], pairs[i][1], q, e, errname(e));
            if (q) {
                p = q;
                continue;
            }
            long bad = bad_at(p, 100, 3);
            CHECK(bad < 0, "a failed reallocarray(p, %zu, %zu) changed byte %ld", pairs[i][0],
                  pairs[i][1], bad);
        }
        unsigned char *q = reallocarray(p, opaque(1000), 1000);
        if (CHECK(q != NULL, "reallocarray(p, 1000, 1000)")) {
            long bad = bad_at(q, 100, 3);
            CHECK(bad < 0, "reallocarray grew the block and lost byte %ld", bad);
            p = q;
            fill(p, 1000 * 1000, 4);
            errno = EDOM;
            q = reallocarray(p, opaque(SIZE_MAX / 4 + 1), 8);
            int e = errno;
            CHECK(q == NULL && e == ENOMEM, "reallocarray(large p, SIZE_MAX/4+1, 8) = %p, %d", q,
                  e);
            if (q)
                p = q;
            else {
                long bad2 = bad_at(p, 1000 * 1000, 4);
                CHECK(bad2 < 0, "a failed reallocarray changed byte %ld of a large block", bad2);
            }
        }
        free(p);
    }
    end("");
}

/* ---- 5. alignment -------------------------------------------------------------------------- */

/* A block from an aligned entry point: non-NULL, aligned, usable >= n, every usable byte kept
 * (with `all` 0: the n requested bytes and the last usable one; glibc's usable size of a block
 * aligned to 64 MiB can be 64 MiB more than asked). Frees it. */
static void check_block(void *p, const char *fn, size_t align, size_t n, size_t want, int all) {
    if (!CHECK(p != NULL, "%s(%zu, %zu) = NULL", fn, align, n))
        return;
    CHECK(aligned(p, want), "%s(%zu, %zu) = %p, not aligned to %zu", fn, align, n, p, want);
    size_t usable = malloc_usable_size(p);
    CHECK(usable >= n, "%s(%zu, %zu): usable size %zu", fn, align, n, usable);
    size_t span = all ? usable : n;
    unsigned seed = (unsigned)(align + n);
    fill(p, span, seed);
    if (usable > span)
        ((unsigned char *)p)[usable - 1] = 0x5C;
    long bad = bad_at(p, span, seed);
    CHECK(bad < 0 && (usable == span || ((unsigned char *)p)[usable - 1] == 0x5C),
          "%s(%zu, %zu): usable byte %ld (of %zu) did not keep what was written", fn, align, n,
          bad < 0 ? (long)usable - 1 : bad, usable);
    free(p);
}

static void check_aligned_block(void *p, const char *fn, size_t align, size_t n, size_t want) {
    check_block(p, fn, align, n, want, 1);
}

static void s5_alignment(void) {
    begin("5 alignment: memalign, posix_memalign, aligned_alloc, valloc, pvalloc");
    /* Every power of two from 16 B to 64 MiB (every usable byte written up to 2 MiB), sizes 0,
     * 1, odd, and a large odd one (an mmap block in every mode). glibc's aligned_alloc takes
     * any size, a multiple of the alignment or not (C17 dropped that requirement), and so must
     * a replacement. */
    const size_t sizes[] = {0, 1, 777, MiB + 5};
    for (size_t a = 16; a <= 64 * MiB; a <<= 1) {
        int all = a <= 2 * MiB; /* beyond, the requested bytes and the last usable one */
        for (size_t s = 0; s < 4; s++) {
            size_t n = sizes[s];
            check_block(memalign(opaque(a), opaque(n)), "memalign", a, n, a, all);
            check_block(aligned_alloc(opaque(a), opaque(n)), "aligned_alloc", a, n, a, all);
            void *p = NULL;
            int rc = posix_memalign(&p, opaque(a), opaque(n));
            if (CHECK(rc == 0, "posix_memalign(%zu, %zu) = %d", a, n, rc))
                check_block(p, "posix_memalign", a, n, a, all);
        }
    }
    /* posix_memalign's smallest alignment is sizeof(void *). */
    for (size_t s = 0; s < 4; s++) {
        void *p = NULL;
        int rc = posix_memalign(&p, opaque(sizeof(void *)), opaque(sizes[s]));
        if (CHECK(rc == 0, "posix_memalign(%zu, %zu) = %d", sizeof(void *), sizes[s], rc))
            check_aligned_block(p, "posix_memalign", sizeof(void *), sizes[s], sizeof(void *));
    }
    /* memalign: an alignment up to 16 (0 and non-powers of two included) is malloc's; above,
     * a non-power of two is rounded up to the next one (glibc's documented memalign; the
     * replacement copies it, docs/preload.md). */
    const size_t low[] = {0, 1, 2, 3, 8, 12, 16};
    for (size_t i = 0; i < sizeof low / sizeof low[0]; i++)
        check_aligned_block(memalign(opaque(low[i]), opaque(100)), "memalign", low[i], 100, 16);
    const size_t odd[][2] = {{24, 32}, {48, 64}, {100, 128}, {4097, 8192}, {5000, 8192},
                             {3 * MiB, 4 * MiB}};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        check_aligned_block(memalign(opaque(odd[i][0]), opaque(10)), "memalign", odd[i][0], 10,
                            odd[i][1]);
    /* aligned_alloc with an alignment that is not a power of two (or 0): glibc up to 2.37
     * treated it as memalign (rounded up, as above); 2.38 returns NULL with EINVAL. Not
     * asserted: which of the two (either is glibc's, by version). */
    const size_t any[][2] = {{0, 16}, {3, 16}, {12, 16}, {24, 32}, {100, 128}, {5000, 8192}};
    for (size_t i = 0; i < sizeof any / sizeof any[0]; i++) {
        errno = EDOM;
        void *p = aligned_alloc(opaque(any[i][0]), opaque(100));
        int e = errno;
        if (p == NULL)
            CHECK(e == EINVAL, "aligned_alloc(%zu, 100) = NULL, errno %d (%s); expected EINVAL "
                  "(glibc >= 2.38) or a block aligned to %zu (glibc <= 2.37)", any[i][0], e,
                  errname(e), any[i][1]);
        else
            check_aligned_block(p, "aligned_alloc", any[i][0], 100, any[i][1]);
    }
    /* valloc: page-aligned. pvalloc: page-aligned, the size rounded up to whole pages, all of
     * them usable. Not asserted: a whole page for pvalloc(0) (glibc 2.36 gives a page-aligned
     * block whose usable size is less than a page; only non-NULL and alignment are checked). */
    const size_t vsizes[] = {0, 1, 777, 4096, 4097, 100000, 3 * MiB + 5};
    for (size_t i = 0; i < sizeof vsizes / sizeof vsizes[0]; i++) {
        size_t n = vsizes[i];
        check_aligned_block(valloc(opaque(n)), "valloc", page, n, page);
        void *p = pvalloc(opaque(n));
        if (CHECK(p != NULL, "pvalloc(%zu)", n)) {
            size_t usable = malloc_usable_size(p);
            CHECK(usable >= round_up(n, page), "pvalloc(%zu): usable %zu, below %zu", n, usable,
                  round_up(n, page));
            check_aligned_block(p, "pvalloc", page, round_up(n, page), page);
        }
    }
    end("");
}

/* ---- 6. malloc_usable_size ------------------------------------------------------------------ */

enum { E_MALLOC, E_CALLOC, E_REALLOC_NULL, E_REALLOC_GROWN, E_REALLOC_SHRUNK, E_REALLOCARRAY,
       E_MEMALIGN, E_ALIGNED_ALLOC, E_POSIX_MEMALIGN, E_VALLOC, E_PVALLOC, E_COUNT };
static const char *const ENTRY[E_COUNT] = {
    "malloc",        "calloc",         "realloc(NULL, n)", "realloc(grown)", "realloc(shrunk)",
    "reallocarray",  "memalign(64)",   "aligned_alloc(256)", "posix_memalign(4096)", "valloc",
    "pvalloc"};

/* A block of n bytes from entry point `e`; its promised alignment in *align, the size it must
 * at least have in *need. */
static void *entry_alloc(int e, size_t n, size_t *align, size_t *need) {
    void *p = NULL, *q;
    *align = 16;
    *need = n;
    switch (e) {
    case E_MALLOC: return malloc(opaque(n));
    case E_CALLOC: return calloc(opaque(n), 1);
    case E_REALLOC_NULL: return realloc(NULL, opaque(n));
    case E_REALLOC_GROWN:
        q = malloc(opaque(1));
        p = realloc(q, opaque(n));
        if (!p)
            free(q);
        return p;
    case E_REALLOC_SHRUNK:
        q = malloc(opaque(n + n / 2 + 700 * KiB));
        p = q ? realloc(q, opaque(n)) : NULL;
        if (!p)
            free(q);
        return p;
    case E_REALLOCARRAY: return reallocarray(NULL, opaque(n), 1);
    case E_MEMALIGN: *align = 64; return memalign(opaque(64), n);
    case E_ALIGNED_ALLOC: *align = 256; return aligned_alloc(opaque(256), n);
    case E_POSIX_MEMALIGN:
        *align = 4096;
        return posix_memalign(&p, opaque(4096), n) == 0 ? p : NULL;
    case E_VALLOC: *align = page; return valloc(opaque(n));
    default: *align = page; *need = round_up(n, page); return pvalloc(opaque(n));
    }
}

static void s6_usable(void) {
    begin("6 malloc_usable_size, malloc(0)");
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu",
          malloc_usable_size(NULL));
    /* malloc(0): a unique, freeable pointer each time (glibc returns one; NULL would be allowed
     * by C, but not by a drop-in glibc replacement). */
    void *zero[64];
    int distinct = 1;
    for (int i = 0; i < 64; i++) {
        zero[i] = malloc(opaque(0));
        CHECK(zero[i] != NULL && aligned(zero[i], 16), "malloc(0) #%d = %p", i, zero[i]);
        for (int j = 0; j < i; j++)
            distinct &= zero[i] != zero[j] || zero[i] == NULL;
    }
    CHECK(distinct, "64 live malloc(0) blocks are not all distinct");
    for (int i = 0; i < 64; i++)
        free(zero[i]);

    /* Every entry point, every size: usable >= requested (Not asserted: exact usable sizes, the
     * allocator's business), aligned as promised (malloc's 16 on x86-64: the glibc manual's
     * "a multiple of sixteen on 64-bit systems"), every usable byte writable and kept. */
    for (int e = 0; e < E_COUNT; e++) {
        for (size_t i = 0; i < NSIZES; i++) {
            size_t n = SIZES[i], align, need;
            unsigned char *p = entry_alloc(e, n, &align, &need);
            if (!CHECK(p != NULL, "%s of %zu bytes", ENTRY[e], n))
                continue;
            size_t usable = malloc_usable_size(p);
            CHECK(usable >= need, "%s(%zu): malloc_usable_size = %zu, below %zu", ENTRY[e], n,
                  usable, need);
            CHECK(aligned(p, align), "%s(%zu) = %p, not aligned to %zu", ENTRY[e], n, (void *)p,
                  align);
            fill(p, usable, (unsigned)(e * 31 + i));
            long bad = bad_at(p, usable, (unsigned)(e * 31 + i));
            CHECK(bad < 0, "%s(%zu): usable byte %ld of %zu did not keep what was written",
                  ENTRY[e], n, bad, usable);
            free(p);
        }
    }
    /* A realloc that grows a block keeps all its usable bytes, not only the requested ones, and
     * a shrink keeps the prefix. (The malloc_usable_size(3) page discourages relying on the
     * excess; glibc keeps it, as the replacement does: its realloc copies the usable size.)
     * Plain blocks and blocks aligned to 64, 4096 and 65536, up to 3 MiB. */
    static const size_t aligns[] = {0, 64, 4096, 65536}; /* 0: malloc */
    for (size_t a = 0; a < 4; a++) {
        for (size_t i = 0; i < NSIZES && SIZES[i] <= (3 << 20); i++) {
            size_t n = opaque(SIZES[i]);
            unsigned seed = (unsigned)(i + a * 100);
            unsigned char *p = aligns[a] ? memalign(aligns[a], n) : malloc(n);
            if (!CHECK(p != NULL && (!aligns[a] || aligned(p, aligns[a])), "%zu B at %zu", n,
                       aligns[a]))
                continue;
            size_t usable = malloc_usable_size(p);
            fill(p, usable, seed);
            unsigned char *q = realloc(p, opaque(usable + 1));
            if (!CHECK(q != NULL, "realloc(%zu B block, %zu)", n, usable + 1)) {
                free(p);
                continue;
            }
            long bad = bad_at(q, usable, seed);
            CHECK(bad < 0, "realloc(%zu B block aligned to %zu, %zu) lost usable byte %ld of %zu",
                  n, aligns[a], usable + 1, bad, usable);
            unsigned char *r = realloc(q, opaque(usable / 2 + 1));
            if (!CHECK(r != NULL, "shrink to %zu", usable / 2 + 1)) {
                free(q);
                continue;
            }
            bad = bad_at(r, usable / 2 + 1, seed);
            CHECK(bad < 0, "shrinking realloc to %zu lost byte %ld", usable / 2 + 1, bad);
            free(r);
        }
    }
    end("");
}

/* ---- children: sections 7 and 8 ----------------------------------------------------------- */

/* What a child reports to the parent: a shared page, mapped before the fork. */
struct child_report {
    long checks, failed;
    long n[6];
    uint64_t ns[4];
    int err[2];
};
static struct child_report *shared;

/* Runs `body` in a forked child under alarm(seconds); the child's checks count in the child,
 * its failures print on stderr, and it exits 0 iff none failed. Returns the wait status. */
static int in_child(void (*body)(void), unsigned seconds) {
    memset(shared, 0, sizeof *shared);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(seconds);
        setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0}); /* an abort leaves no core file */
        passed = failed = 0;
        body();
        shared->checks = passed + failed;
        shared->failed = failed;
        fflush(stdout);
        _exit(failed ? 1 : 0);
    }
    int status = 0;
    if (CHECK(pid > 0, "fork: errno %d", errno))
        CHECK(waitpid(pid, &status, 0) == pid);
    return status;
}

/* The parent's verdict on a child: exited 0, and the child's checks added to the count. */
static void judge_child(int status, const char *what) {
    passed += shared->checks - shared->failed;
    failed += shared->failed;
    section_checks += shared->checks;
    section_failed += shared->failed;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the child %s %d%s", what,
          WIFEXITED(status) ? "exited with status" : "was killed by signal",
          WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? WTERMSIG(status) : -1,
          WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT   ? " (SIGABRT: aborted)"
          : WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM ? " (SIGALRM: hung)"
                                                                : "");
}

/* The first number in a /proc file, read without allocating. */
static long proc_number(const char *path) {
    char buf[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return strtol(buf, NULL, 10);
}

/* ---- 7. recovery after exhaustion under RLIMIT_AS ------------------------------------------- */

#define LARGE_BOUND 1024     /* 1 MiB blocks: 1 GiB, far past the 128 MiB allowed */
#define SMALL_BOUND 1000000  /* 64 B blocks: 64 MB */

/* Blocks kept in a list threaded through themselves: the test allocates nothing else. */
static void *push(void *head, void *block) {
    *(void **)block = head;
    return block;
}

static long free_list(void *head) {
    long n = 0;
    while (head) {
        void *next = *(void **)head;
        free(head);
        head = next;
        n++;
    }
    return n;
}

/* 1 MiB blocks until NULL (each NULL with ENOMEM); their count, or -1 past the bound. */
static long large_until_null(void **list) {
    for (long n = 0; n < LARGE_BOUND; n++) {
        errno = EDOM;
        void *p = malloc(opaque(MiB));
        if (!p) {
            int e = errno;
            CHECK(e == ENOMEM, "malloc(1 MiB) under RLIMIT_AS = NULL, errno %d (%s)", e,
                  errname(e));
            return n;
        }
        *list = push(*list, p);
    }
    return -1;
}

static void exhaustion_child(void) {
    long pages = proc_number("/proc/self/statm");
    if (!CHECK(pages > 0, "cannot read /proc/self/statm"))
        return;
    rlim_t limit = (rlim_t)pages * page + 128 * MiB;
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = limit;
    if (!CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit(RLIMIT_AS): errno %d", errno))
        return;
    void *large = NULL, *small = NULL;
    long nlarge = large_until_null(&large);
    CHECK(nlarge >= 0, "%d blocks of 1 MiB under a limit of 128 MiB more: RLIMIT_AS did not "
          "stop them", LARGE_BOUND);
    /* Then 64 B blocks until NULL or the bound. Not asserted: that they reach NULL. A pool whose
     * address space was reserved before the limit is not bound by RLIMIT_AS
     * (docs/reliability.md), so reaching the bound without a NULL is not a failure. */
    long nsmall = 0;
    int small_null = 0;
    for (; nsmall < SMALL_BOUND; nsmall++) {
        errno = EDOM;
        void *p = malloc(opaque(64));
        if (!p) {
            int e = errno;
            CHECK(e == ENOMEM, "malloc(64) under RLIMIT_AS = NULL, errno %d (%s)", e, errname(e));
            small_null = 1;
            break;
        }
        small = push(small, p);
    }
    /* Everything back; then the allocator must serve again. */
    free_list(small);
    free_list(large);
    void *s = malloc(opaque(64));
    void *l = malloc(opaque(MiB));
    CHECK(s && l, "after freeing everything: malloc(64) = %p, malloc(1 MiB) = %p", s, l);
    /* Memory freed is memory the program can have again, in blocks of other sizes too: glibc
     * serves these from what the 1 MiB blocks and the small ones gave back. */
    void *h = malloc(opaque(32 * MiB));
    unsigned char *z = calloc(opaque(1), 4 * MiB);
    CHECK(h && z, "after freeing everything (%ld x 1 MiB, %ld x 64 B): malloc(32 MiB) = %p, "
          "calloc(1, 4 MiB) = %p: the freed address space is not available to other sizes",
          nlarge, nsmall, h, (void *)z);
    if (h)
        fill(h, 32 * MiB, 13);
    if (z)
        CHECK(nonzero_at(z, 4 * MiB) < 0, "calloc after exhaustion is not zeroed");
    free(s);
    free(l);
    free(h);
    free(z);
    /* And the address space the 1 MiB blocks had is theirs again (at least half of it). */
    large = NULL;
    long again = large_until_null(&large);
    free_list(large);
    CHECK(again >= nlarge / 2, "after freeing everything, %ld blocks of 1 MiB fit, %ld before",
          again, nlarge);
    void *last = malloc(opaque(MiB));
    CHECK(last != NULL, "malloc(1 MiB) after the second exhaustion");
    free(last);
    shared->n[0] = nlarge;
    shared->n[1] = nsmall;
    shared->n[2] = small_null;
    shared->n[3] = again;
}

static void s7_exhaustion(void) {
    begin("7 recovery after exhaustion (RLIMIT_AS, child)");
    int status = in_child(exhaustion_child, 60);
    judge_child(status, "exhaustion");
    char note[200] = "";
    if (WIFEXITED(status))
        snprintf(note, sizeof note,
                 "%ld x 1 MiB, then %ld x 64 B%s; %ld x 1 MiB again after freeing", shared->n[0],
                 shared->n[1], shared->n[2] ? " until NULL" : " (the bound; no NULL)",
                 shared->n[3]);
    end(note);
}

/* ---- 8. a failed munmap at the map-count limit ---------------------------------------------- */

#define MAX_FILLERS 262144
static void *fillers[MAX_FILLERS];

/* At the limit the kernel cannot split a mapping: unmapping the middle of one fails with
 * ENOMEM. The middle block of three adjacent 48 MiB mappings (which the kernel merges into one)
 * is such a free. The free must return, with errno unchanged; nothing may abort. Nothing here
 * allocates or prints between filling and unfilling. */
static void map_count_child(void) {
    long max = proc_number("/proc/sys/vm/max_map_count");
    int fd = memfd_create("conformance-filler", MFD_CLOEXEC);
    if (!CHECK(fd >= 0 && ftruncate(fd, (off_t)page) == 0, "memfd: errno %d", errno))
        return;
    const size_t big = 48 * MiB;
    unsigned char *b[3];
    for (int i = 0; i < 3; i++) {
        b[i] = malloc(opaque(big));
        if (!CHECK(b[i] != NULL, "malloc(48 MiB)"))
            return;
        fill_byte(b[i], big, (unsigned char)(0x10 + i));
    }
    /* A probe: an anonymous mapping of three pages whose middle page cannot be unmapped at the
     * limit. It tells whether the limit was really reached. */
    unsigned char *probe = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!CHECK(probe != MAP_FAILED))
        return;
    uint64_t t0 = now_ns();
    long n = 0;
    int fill_errno = 0;
    while (n < MAX_FILLERS) {
        /* Same file, same offset: no two of these can merge. */
        void *m = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            fill_errno = errno;
            break;
        }
        fillers[n++] = m;
    }
    uint64_t t1 = now_ns();
    int probe_rc = munmap(probe + page, page);
    int probe_errno = errno;
    errno = EDOM;
    free(b[1]);
    int free_errno = errno;
    uint64_t t2 = now_ns();
    for (long i = 0; i < n; i++)
        munmap(fillers[i], page);
    uint64_t t3 = now_ns();
    /* Below the limit again: checks may print. */
    CHECK(n < MAX_FILLERS && fill_errno == ENOMEM,
          "filling the map count (max %ld): %ld mappings, then errno %d (%s)", max, n, fill_errno,
          errname(fill_errno));
    CHECK(free_errno == EDOM, "free(48 MiB block) at the map-count limit changed errno to %d (%s)",
          free_errno, errname(free_errno));
    for (int i = 0; i < 3; i += 2) {
        long bad = -1;
        for (size_t k = 0; k < big && bad < 0; k += page)
            if (b[i][k] != (unsigned char)(0x10 + i) ||
                b[i][k + page - 1] != (unsigned char)(0x10 + i))
                bad = (long)k;
        CHECK(bad < 0, "48 MiB block %d changed at offset %ld by the failed free of block 1", i,
              bad);
        free_keeps_errno(b[i], "a 48 MiB block after the map-count limit", big, 0);
    }
    void *again = malloc(opaque(big)), *small = malloc(opaque(100));
    CHECK(again && small, "malloc after the map-count limit: %p, %p", again, small);
    if (again)
        fill_byte(again, big, 0x77);
    free(again);
    free(small);
    munmap(probe, 3 * page);
    close(fd);
    shared->n[0] = n;
    shared->n[1] = probe_rc == -1 && probe_errno == ENOMEM;
    shared->ns[0] = t1 - t0;
    shared->ns[1] = t2 - t1;
    shared->ns[2] = t3 - t2;
}

static void s8_map_count(void) {
    begin("8 free at the map-count limit (child)");
    long max = proc_number("/proc/sys/vm/max_map_count");
    if (max <= 0 || max >= MAX_FILLERS - 1024) {
        end("skipped: vm.max_map_count unreadable or too large to fill");
        return;
    }
    int status = in_child(map_count_child, 30);
    judge_child(status, "map-count limit");
    char note[200] = "";
    if (WIFEXITED(status))
        snprintf(note, sizeof note,
                 "%ld fillers (max_map_count %ld) in %.2f s; a split %s at the limit; the free "
                 "took %.3f ms",
                 shared->n[0], max, (double)shared->ns[0] / 1e9,
                 shared->n[1] ? "was refused" : "was NOT refused (the limit was not reached?)",
                 (double)shared->ns[1] / 1e6);
    end(note);
}

/* ---- 9. the cost of a failed allocation ------------------------------------------------------ */

#define FAILED_CALLS 2000

static void s9_failure_cost(void) {
    begin("9 the cost of a failed malloc (reported)");
    /* Give the caches something to hold first: 4 x 2 MiB and 4 x 8 MiB, written, freed. */
    for (int size = 0; size < 2; size++) {
        void *b[4];
        size_t n = size ? 8 * MiB : 2 * MiB;
        for (int i = 0; i < 4; i++) {
            b[i] = malloc(opaque(n));
            if (b[i])
                fill_byte(b[i], n, 1);
        }
        for (int i = 0; i < 4; i++)
            free(b[i]);
    }
    long wrong = 0;
    uint64_t t0 = now_ns();
    for (int i = 0; i < FAILED_CALLS; i++) {
        errno = EDOM;
        void *p = malloc(opaque(refused));
        if (p || errno != ENOMEM)
            wrong++;
        free(p);
    }
    uint64_t ns = (now_ns() - t0) / FAILED_CALLS;
    CHECK(wrong == 0, "%ld of %d calls of malloc(%zu) did not fail with ENOMEM", wrong,
          FAILED_CALLS, refused);
    /* The caches still work afterwards. */
    void *p = malloc(opaque(2 * MiB));
    CHECK(p != NULL);
    free(p);
    printf("failed-malloc-ns: %llu\n", (unsigned long long)ns);
    char note[100];
    snprintf(note, sizeof note, "%d calls of malloc(%zu), %llu ns each", FAILED_CALLS, refused,
             (unsigned long long)ns);
    end(note);
}

/* ---- main ------------------------------------------------------------------------------------ */

/* `conformance [N…]`: with arguments, only the sections numbered (for a developer's rerun). */
int main(int argc, char **argv) {
    alarm(300); /* the whole program, whatever happens */
    setvbuf(stdout, NULL, _IOLBF, 0);
    page = (size_t)sysconf(_SC_PAGESIZE);
    /* 3 TiB: more than RAM + swap, which the kernel's default overcommit heuristic refuses in
     * one mapping. With overcommit_memory = 1 (always) it would be granted, so then a request
     * past the 128 TiB user address space stands in for it. */
    refused = (size_t)3 << 40;
    if (proc_number("/proc/sys/vm/overcommit_memory") == 1) {
        refused = (size_t)200 << 40;
        printf("note: vm.overcommit_memory = 1: %zu bytes stand in for 3 TiB\n", refused);
    }
    init_huge();
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        fprintf(stderr, "conformance: mmap of the shared page failed\n");
        return 2;
    }
    void (*const sections[])(void) = {s1_entry_points, s2_free,     s3_realloc,
                                      s4_calloc,       s5_alignment, s6_usable,
                                      s7_exhaustion,   s8_map_count, s9_failure_cost};
    const int count = sizeof sections / sizeof sections[0];
    for (int i = 0; i < count; i++) {
        int wanted = argc == 1;
        for (int a = 1; a < argc; a++)
            wanted |= atoi(argv[a]) == i + 1;
        if (wanted)
            sections[i]();
    }
    printf("conformance: %ld passed, %ld failed\n", passed, failed);
    return failed ? 1 : 0;
}
