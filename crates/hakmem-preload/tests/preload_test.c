/*
 * The preload library's C test (docs/preload.md): the library as a program's malloc, in the
 * situations a real program puts it in — glibc's own allocations freed by the library (strdup,
 * stdio, dlerror, …), dynamic TLS set-up in threads and a DTV outgrown while threads run, thread
 * exit, a pthread key past glibc's first 32 made at the first allocation, fork from a
 * multi-threaded process, misuse, exit handlers that allocate, and a multi-threaded malloc/free
 * storm with cross-thread frees.
 *
 * The contract of each entry point (return values, errno, alignment, usable size, realloc's and
 * calloc's edge cases, exhaustion) is conformance.c's, not this file's.
 *
 * It runs unchanged on plain glibc (`cargo xtask preload --check` runs it there first), so
 * every expectation below is glibc's behaviour, not something only hakmem does.
 *
 *   preload_test TLS_LIB [EXPECTED_MODE]
 *
 * TLS_LIB is this file compiled with -DTLS_LIB -shared (a library with dynamic TLS, loaded
 * with dlopen). EXPECTED_MODE: the hakmem mode `hakmem_mode()` must report, or `glibc` for a
 * run without the library (then `hakmem_mode` must not exist). Prints one `ok NAME` line per
 * check group and `preload_test: all N checks passed`; any failure prints `FAIL …` and exits 1.
 * Every child it forks arms alarm(), so nothing can hang.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef TLS_LIB
/* A library with dynamic TLS: the first access in each thread makes glibc allocate the
 * thread's block for it (with malloc, i.e. the preloaded library), freed at thread exit. */
static __thread unsigned char tls_block[64 * 1024];
static __thread unsigned tls_counter;

unsigned tls_touch(unsigned seed) {
    for (size_t i = 0; i < sizeof tls_block; i += 512)
        tls_block[i] = (unsigned char)(seed + i);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof tls_block; i += 512)
        sum += tls_block[i];
    return sum + ++tls_counter;
}
#else

static long checks;

#define FAIL(...)                                                                              \
    do {                                                                                       \
        fprintf(stderr, "FAIL %s:%d: ", __func__, __LINE__);                                   \
        fprintf(stderr, __VA_ARGS__);                                                          \
        fputc('\n', stderr);                                                                   \
        exit(1);                                                                               \
    } while (0)

/* CHECK(condition) or CHECK(condition, "format", args…): the message says which check. */
#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        checks++;                                                                              \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: `%s`", __func__, __LINE__, #cond);                    \
            fprintf(stderr, " " __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                               \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed * 131 + i * 7);
}

static int verify(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 131 + i * 7))
            return 0;
    return 1;
}

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* ---- glibc's own allocations, freed by the program ----------------------------------------- */

static int cmp_int(const void *a, const void *b) {
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

static void test_libc(void) {
    char *s = strdup("hakmem");
    CHECK(s && strcmp(s, "hakmem") == 0);
    free(s);
    char *t = NULL;
    CHECK(asprintf(&t, "%s-%d", "x", 42) == 4 && strcmp(t, "x-42") == 0);
    free(t);
    char *buf = NULL;
    size_t cap = 0;
    FILE *m = open_memstream(&buf, &cap);
    CHECK(m != NULL);
    for (int i = 0; i < 10000; i++)
        fprintf(m, "%d\n", i);
    fclose(m);
    CHECK(cap > 40000 && strncmp(buf, "0\n1\n2\n", 6) == 0);
    FILE *r = fmemopen(buf, cap, "r");
    char *line = NULL;
    size_t linecap = 0;
    long lines = 0;
    while (getline(&line, &linecap, r) > 0)
        lines++;
    CHECK(lines == 10000, "getline read %ld lines", lines);
    free(line);
    fclose(r);
    free(buf);
    /* qsort of a large array allocates its scratch with malloc. */
    size_t n = 200000;
    int *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (int)((i * 2654435761u) % 1000003);
    qsort(v, n, sizeof *v, cmp_int);
    for (size_t i = 1; i < n; i++)
        CHECK(v[i - 1] <= v[i]);
    free(v);
    regex_t re;
    CHECK(regcomp(&re, "^(ha|k)+mem$", REG_EXTENDED) == 0);
    CHECK(regexec(&re, "hakkhamem", 0, NULL, 0) == 0);
    regfree(&re);
    DIR *d = opendir("/");
    CHECK(d != NULL);
    int entries = 0;
    while (readdir(d))
        entries++;
    closedir(d);
    CHECK(entries > 2);
    struct dirent **list;
    int k = scandir("/", &list, NULL, alphasort);
    CHECK(k > 2);
    while (k--)
        free(list[k]);
    free(list);
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    char tmp[256];
    CHECK(fgets(tmp, sizeof tmp, f) != NULL);
    fclose(f);
    puts("ok glibc's allocations (strdup, stdio, getline, qsort, regex, dirent)");
}

/* ---- dlopen, dlsym, dlerror ---------------------------------------------------------------- */

typedef unsigned (*tls_touch_fn)(unsigned);
static tls_touch_fn tls_touch;

static void test_dl(const char *tls_lib, const char *expected) {
    /* dlerror's message is malloc'ed and freed by glibc on the next call. */
    for (int i = 0; i < 100; i++) {
        CHECK(dlsym(RTLD_DEFAULT, "no_such_symbol_anywhere") == NULL);
        CHECK(dlerror() != NULL);
    }
    CHECK(dlopen("/no/such/library.so", RTLD_NOW) == NULL && dlerror() != NULL);
    void *h = dlopen(tls_lib, RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL, "dlopen(%s): %s", tls_lib, dlerror());
    tls_touch = (tls_touch_fn)dlsym(h, "tls_touch");
    CHECK(tls_touch != NULL);
    tls_touch(1);
    /* Which allocator is this? */
    const char *(*mode)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "hakmem_mode");
    if (strcmp(expected, "glibc") == 0) {
        CHECK(mode == NULL, "hakmem_mode exists without the library");
    } else {
        CHECK(mode != NULL, "hakmem_mode is exported");
        CHECK(strcmp(mode(), expected) == 0, "hakmem_mode() = %s, expected %s", mode(),
              expected);
    }
    printf("ok dlopen, dlsym, dlerror (allocator: %s)\n", mode ? mode() : "glibc");
}

/* ---- a DTV outgrown while threads run ----------------------------------------------------- */

/* glibc gives each thread a DTV (the table of its dynamic TLS blocks) with room for 14 more
 * modules than were loaded at its start. Loading more libraries with TLS makes each thread's next
 * TLS access grow it: glibc reallocates it with realloc, that is through the library, whose own
 * thread-locals (the pool's thread state; the debug build's re-entry flag) are reached through
 * __tls_get_addr from inside that very call. This loads 24 copies of the TLS library while a
 * thread that already allocated waits, then has that thread, the main thread and new threads
 * allocate and touch every copy's TLS, and unloads them (glibc frees their TLS blocks). */

#define TLS_LIBS 24

static tls_touch_fn many_touch[TLS_LIBS];
static atomic_int dtv_phase;

static void *dtv_thread(void *arg) {
    int old = arg != NULL;
    void *p = malloc(100);
    free(p);
    if (old) {
        atomic_store(&dtv_phase, 1);
        while (atomic_load(&dtv_phase) != 2)
            usleep(100);
    }
    unsigned sum = 0;
    for (int i = 0; i < TLS_LIBS; i++) {
        void *q = malloc((size_t)i * 100 + 1);
        sum += many_touch[i]((unsigned)i);
        free(q);
    }
    return malloc(16 + (sum & 1));
}

static void copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    CHECK(in && out, "copy %s to %s", from, to);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        CHECK(fwrite(buf, 1, n, out) == n);
    fclose(in);
    CHECK(fclose(out) == 0);
}

static void test_dtv(const char *tls_lib) {
    const char *tmp = getenv("TMPDIR");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/preload_test_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CHECK(mkdtemp(dir) != NULL, "mkdtemp(%s): %s", dir, strerror(errno));
    pthread_t old;
    CHECK(pthread_create(&old, NULL, dtv_thread, (void *)1) == 0);
    while (atomic_load(&dtv_phase) != 1)
        usleep(100);
    static char paths[TLS_LIBS][600];
    void *handles[TLS_LIBS];
    for (int i = 0; i < TLS_LIBS; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/tls%d.so", dir, i);
        copy_file(tls_lib, paths[i]);
        handles[i] = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        CHECK(handles[i] != NULL, "dlopen(%s): %s", paths[i], dlerror());
        many_touch[i] = (tls_touch_fn)dlsym(handles[i], "tls_touch");
        CHECK(many_touch[i] != NULL);
        many_touch[i]((unsigned)i); /* the main thread's DTV grows too */
    }
    atomic_store(&dtv_phase, 2);
    void *ret;
    CHECK(pthread_join(old, &ret) == 0 && ret != NULL);
    free(ret);
    for (int t = 0; t < 4; t++) {
        pthread_t fresh;
        CHECK(pthread_create(&fresh, NULL, dtv_thread, NULL) == 0);
        CHECK(pthread_join(fresh, &ret) == 0 && ret != NULL);
        free(ret);
    }
    for (int i = 0; i < TLS_LIBS; i++) {
        CHECK(dlclose(handles[i]) == 0);
        unlink(paths[i]);
    }
    rmdir(dir);
    void *p = malloc(1000); /* the next TLS access after the unloads updates the DTV again */
    CHECK(p != NULL);
    free(p);
    printf("ok dynamic TLS outgrowing the DTV (%d libraries loaded while a thread runs)\n",
           TLS_LIBS);
}

/* ---- a pthread key past the first 32 --------------------------------------------------------- */

/* main makes these before anything allocates. glibc keeps the values of keys past the first 32
 * in arrays that pthread_setspecific callocs per thread. In every mode but MINIMAL the pool makes a
 * key of its own at the first allocation (its thread-exit hook), so that key lands past these
 * 40: each thread's first pool allocation sets it, and glibc callocs, through the library, from
 * inside that allocation (docs/pool.md says how the pool serves that re-entry). */
#define EARLY_KEYS 40
static pthread_key_t early_keys[EARLY_KEYS];

static void make_early_keys(void) {
    for (int i = 0; i < EARLY_KEYS; i++)
        if (pthread_key_create(&early_keys[i], NULL) != 0)
            _exit(4);
}

static void test_early_keys(const char *expected) {
    pthread_key_t next;
    CHECK(pthread_key_create(&next, NULL) == 0);
    /* Every mode but MINIMAL has the pool; glibc has none. */
    int pool = strcmp(expected, "minimal") != 0 && strcmp(expected, "glibc") != 0;
    /* Otherwise the re-entrant pthread_setspecific this is about would go untested. */
    CHECK(next == early_keys[EARLY_KEYS - 1] + 1 + (pool ? 1 : 0),
          "keys 0..%u were the program's; the next free one is %u (%s)",
          early_keys[EARLY_KEYS - 1], next,
          pool ? "the pool's own key expected right after them" : "no other key expected");
    CHECK(pthread_key_delete(next) == 0);
    printf("ok pthread keys (40 made before the first allocation%s)\n",
           pool ? "; the pool's, made at it, is key 40: its pthread_setspecific callocs" : "");
}

/* ---- threads: TLS set-up, allocation in thread-exit destructors ---------------------------- */

static pthread_key_t key;
static atomic_long destructor_runs;

static void key_destructor(void *v) {
    /* Runs during thread exit: free what the thread left, and allocate once more. */
    free(v);
    void *p = malloc(100);
    memset(p, 1, 100);
    free(p);
    atomic_fetch_add(&destructor_runs, 1);
}

static __thread char static_tls[1024];

static void *tls_thread(void *arg) {
    unsigned id = (unsigned)(uintptr_t)arg;
    memset(static_tls, (int)id, sizeof static_tls);
    unsigned sum = tls_touch(id); /* first access: glibc mallocs this thread's TLS block */
    (void)sum;
    pthread_setspecific(key, malloc(1000 + id));
    void *keep[64];
    for (int i = 0; i < 64; i++)
        keep[i] = malloc((size_t)(i * 37 + 1));
    for (int i = 0; i < 64; i++)
        free(keep[i]);
    return malloc(64); /* handed to the joining thread, freed there */
}

static void test_threads(void) {
    CHECK(pthread_key_create(&key, key_destructor) == 0);
    for (int round = 0; round < 10; round++) {
        pthread_t t[8];
        for (int i = 0; i < 8; i++)
            CHECK(pthread_create(&t[i], NULL, tls_thread, (void *)(uintptr_t)i) == 0);
        for (int i = 0; i < 8; i++) {
            void *ret;
            CHECK(pthread_join(t[i], &ret) == 0 && ret != NULL);
            free(ret);
        }
    }
    /* Detached threads exit on their own. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < 16; i++) {
        pthread_t t;
        CHECK(pthread_create(&t, &attr, tls_thread, (void *)(uintptr_t)i) == 0);
    }
    pthread_attr_destroy(&attr);
    for (int spins = 0; atomic_load(&destructor_runs) < 96 && spins < 10000; spins++)
        usleep(1000);
    CHECK(atomic_load(&destructor_runs) == 96, "%ld destructors ran",
          atomic_load(&destructor_runs));
    puts("ok threads (static and dynamic TLS, allocation in thread-exit destructors)");
}

/* ---- the storm: many threads, cross-thread frees, every block verified ------------------- */

#define STORM_THREADS 8
#define STORM_SLOTS 4096

struct block {
    unsigned id;
    size_t size;
    unsigned char *data;
};

static _Atomic(struct block *) slots[STORM_SLOTS];
static long storm_ops;

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t storm_size(uint64_t r) {
    unsigned pick = (unsigned)(r % 1000);
    if (pick < 900)
        return 1 + (r >> 10) % 512; /* small */
    if (pick < 995)
        return 512 + (r >> 10) % 16384; /* medium */
    return 400000 + (r >> 10) % (3 << 20); /* large: around the mmap threshold and BigCache */
}

/* Large blocks are checked at their ends and one byte per page; the rest byte by byte. */
static void storm_fill(struct block *b) {
    if (b->size <= 16384 + 512) {
        fill(b->data, b->size, b->id);
        return;
    }
    for (size_t i = 0; i < b->size; i += 4096)
        b->data[i] = (unsigned char)(b->id + i / 4096);
    b->data[b->size - 1] = (unsigned char)b->id;
}

static int storm_verify(const struct block *b) {
    if (b->size <= 16384 + 512)
        return verify(b->data, b->size, b->id);
    for (size_t i = 0; i < b->size; i += 4096)
        if (b->data[i] != (unsigned char)(b->id + i / 4096))
            return 0;
    return b->data[b->size - 1] == (unsigned char)b->id;
}

static void storm_release(struct block *b) {
    if (!storm_verify(b))
        FAIL("storm: block %u (%zu bytes) corrupted", b->id, b->size);
    free(b->data);
    free(b);
}

static void *storm_thread(void *arg) {
    uint64_t seed = 0x9E3779B97F4A7C15ull * ((uintptr_t)arg + 1);
    for (long op = 0; op < storm_ops; op++) {
        uint64_t r = next_rand(&seed);
        struct block *b = malloc(sizeof *b);
        if (!b)
            FAIL("storm: malloc failed");
        b->id = (unsigned)(r >> 32);
        b->size = storm_size(r);
        switch (r % 8) {
        case 0:
            b->data = calloc(1, b->size);
            if (b->data && !all_zero(b->data, b->size < 4096 ? b->size : 4096))
                FAIL("storm: calloc block not zeroed");
            break;
        case 1: {
            void *p = NULL;
            b->data = posix_memalign(&p, (size_t)64 << (r % 4), b->size) == 0 ? p : NULL;
            break;
        }
        case 2: /* grow a smaller block into this one */
            b->data = malloc(b->size / 2 + 1);
            if (b->data) {
                fill(b->data, b->size / 2 + 1, b->id ^ 0x55);
                unsigned char *q = realloc(b->data, b->size);
                if (q && !verify(q, b->size / 2 + 1, b->id ^ 0x55))
                    FAIL("storm: realloc lost the contents");
                b->data = q;
            }
            break;
        default:
            b->data = malloc(b->size);
        }
        if (!b->data)
            FAIL("storm: allocation of %zu bytes failed", b->size);
        storm_fill(b);
        /* Swap it into a random slot: the block found there was most likely made by another
         * thread, and is freed here. */
        struct block *old = atomic_exchange(&slots[(r >> 20) % STORM_SLOTS], b);
        if (old)
            storm_release(old);
    }
    return NULL;
}

static void test_storm(void) {
    pthread_t t[STORM_THREADS];
    for (int i = 0; i < STORM_THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, storm_thread, (void *)(uintptr_t)i) == 0);
    for (int i = 0; i < STORM_THREADS; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    /* What the exited threads left behind is freed here. */
    for (int i = 0; i < STORM_SLOTS; i++) {
        struct block *b = atomic_exchange(&slots[i], NULL);
        if (b)
            storm_release(b);
    }
    printf("ok storm (%d threads x %ld operations, cross-thread frees, verified)\n",
           STORM_THREADS, storm_ops);
}

/* ---- fork from a multi-threaded process ------------------------------------------------- */

#define FORKS 20

static atomic_int churn_stop;

static void *churn_thread(void *arg) {
    uint64_t seed = 12345 + (uintptr_t)arg;
    void *keep[32] = {0};
    while (!atomic_load(&churn_stop)) {
        uint64_t r = next_rand(&seed);
        unsigned i = (unsigned)(r % 32);
        free(keep[i]);
        keep[i] = malloc(storm_size(r));
    }
    for (int i = 0; i < 32; i++)
        free(keep[i]);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    void *p = malloc(1 << 20);
    memset(p, 3, 1 << 20);
    free(p);
    return strdup("child thread");
}

static void child_work(void) {
    alarm(20); /* a deadlocked child dies of SIGALRM, and the parent reports it */
    for (int i = 0; i < 200; i++) {
        void *p = malloc((size_t)(i % 100) * 40 + 1);
        void *q = malloc((size_t)600000 + (size_t)i);
        free(p);
        free(q);
    }
    pthread_t t;
    void *ret = NULL;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0 || pthread_join(t, &ret) != 0 || !ret)
        _exit(3);
    free(ret);
    exit(0); /* exit, not _exit: atexit handlers and stdio flushing run in the child too */
}

static void test_fork(void) {
    pthread_t t[3];
    atomic_store(&churn_stop, 0);
    for (int i = 0; i < 3; i++)
        CHECK(pthread_create(&t[i], NULL, churn_thread, (void *)(uintptr_t)i) == 0);
    fflush(stdout);
    for (int i = 0; i < FORKS; i++) {
        pid_t pid = fork();
        CHECK(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0)
            child_work();
        int status = 0;
        pid_t got = 0;
        for (int waited = 0; waited < 30000 && got == 0; waited++) {
            got = waitpid(pid, &status, WNOHANG);
            if (got == 0)
                usleep(1000);
        }
        if (got == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            FAIL("fork child %d hung (killed after 30 s)", i);
        }
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "fork child %d: exited %d, signal %d", i,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    atomic_store(&churn_stop, 1);
    for (int i = 0; i < 3; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    printf("ok fork (%d children of a process with 3 allocating threads)\n", FORKS);
}

/* ---- misuse: what the library reports (docs/preload.md) ---------------------------------- */

extern void *__libc_malloc(size_t);

/* Runs `misuse` in a child with stderr captured; returns the child's wait status. */
static int in_child(void (*misuse)(void), char *msg, size_t cap) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(20);
        setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0}); /* an expected abort leaves no core */
        setenv("LIBC_FATAL_STDERR_", "1", 1); /* glibc's own reports to stderr, not the tty */
        dup2(fds[1], 2);
        misuse();
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(fds[0], msg + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    msg[len] = 0;
    close(fds[0]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    return status;
}

static void double_free(void) {
    void *p = memalign(64, 100); /* an over-aligned block: its header survives the first free */
    free(p);
    free(p);
}

static void free_glibc_block(void) {
    void *p = __libc_malloc(100);
    free(p);
}

static void test_misuse(const char *expected) {
    char msg[1024];
    int status = in_child(double_free, msg, sizeof msg);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "double free: status %#x", status);
    CHECK(strstr(msg, "double free") != NULL, "double free: message %s", msg);
    /* A block of glibc's own (__libc_malloc) freed with free: under the library it has no
     * header, and the library says so and aborts; on glibc it is an ordinary free. */
    status = in_child(free_glibc_block, msg, sizeof msg);
    if (strcmp(expected, "glibc") == 0) {
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    } else {
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x", status);
        CHECK(strstr(msg, "hakmem: free(0x") && strstr(msg, "invalid pointer"), "message %s",
              msg);
    }
    puts("ok misuse (double free, a block of __libc_malloc's freed with free)");
}

/* ---- exit: handlers that allocate ------------------------------------------------------- */

static void at_exit_allocates(void) {
    char *p = malloc(4 << 20);
    memset(p, 1, 4 << 20);
    free(p);
    p = strdup("bye");
    free(p);
}

__attribute__((destructor)) static void destructor_allocates(void) {
    void *p = calloc(1000, 1000);
    free(p);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: preload_test TLS_LIB [EXPECTED_MODE|glibc]\n");
        return 2;
    }
    make_early_keys(); /* before anything allocates (see test_early_keys) */
    const char *expected = argc > 2 ? argv[2] : "glibc";
    const char *ops = getenv("PRELOAD_TEST_STORM_OPS");
    storm_ops = ops ? atol(ops) : 40000;
    alarm(300); /* the whole program, whatever happens */
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines appear as they happen */
    atexit(at_exit_allocates);
    test_libc();
    test_dl(argv[1], expected);
    test_early_keys(expected);
    test_threads();
    test_dtv(argv[1]);
    test_storm();
    test_fork();
    test_misuse(expected);
    printf("preload_test: all %ld checks passed\n", checks);
    return 0;
}
#endif
