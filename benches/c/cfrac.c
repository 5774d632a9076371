/*
 * cfrac: the kind of load of cfrac (and espresso) in mimalloc-bench: a long-running
 * single-threaded program that makes many short-lived small objects, here the way cfrac does,
 * with bignum arithmetic.
 *
 * It expands the continued fraction of sqrt(N) for a 30-digit N, as cfrac's factoring method
 * does: each step computes m' = d·a − m, d' = (N − m'²) / d and a' = (a0 + m') / d' on
 * heap-allocated natural numbers (32-bit limbs), every operation allocating its result with
 * room to spare and shrinking it with realloc, its operands freed when no longer needed. Each
 * d' is trial-divided by a factor base of small primes; when what is left fits in 32 bits the
 * step is kept as a relation in a linked list (exponents in a byte array grown by realloc),
 * partial relations with the same large prime are combined, and old relations are dropped.
 * Self-checks: every division d' = (N − m'²) / d must be exact, and a relation dropped must
 * multiply back to its d'. The checksum mixes the partial quotients and the relations found.
 */
#define PROGRAM "cfrac"
#include "common.h"

#define STEPS 450000
/* The number whose square root is expanded (30 digits, not a square). */
#define NUMBER "314159265358979323846264338327"
/* Primes below this bound for which N is a square are the factor base. */
#define PRIME_BOUND 200
/* Relations kept at most; past it the older half is dropped. */
#define RELATIONS 1024

/* ---- natural numbers ----------------------------------------------------------------------- */

/* Little-endian 32-bit limbs, no leading zero limb (0 has none). */
typedef struct {
    uint32_t n, cap;
    uint32_t d[];
} nat;

static nat *nat_new(uint32_t cap)
{
    nat *a = xmalloc(sizeof(nat) + (size_t)(cap ? cap : 1) * 4);
    a->n = 0;
    a->cap = cap ? cap : 1;
    return a;
}

/* Drops leading zero limbs, and the spare room with realloc (a result is made with room for
 * the largest possible value). */
static nat *nat_fit(nat *a)
{
    while (a->n > 0 && a->d[a->n - 1] == 0)
        a->n--;
    uint32_t cap = a->n ? a->n : 1;
    if (a->cap > cap + 1) {
        nat *b = realloc(a, sizeof(nat) + (size_t)cap * 4);
        if (b == NULL)
            fail("realloc to %u limbs returned NULL", cap);
        b->cap = cap;
        a = b;
    }
    return a;
}

static nat *nat_u64(uint64_t v)
{
    nat *a = nat_new(2);
    a->d[0] = (uint32_t)v;
    a->d[1] = (uint32_t)(v >> 32);
    a->n = 2;
    return nat_fit(a);
}

static nat *nat_copy(const nat *a)
{
    nat *b = nat_new(a->n);
    memcpy(b->d, a->d, (size_t)a->n * 4);
    b->n = a->n;
    return b;
}

static int nat_cmp(const nat *a, const nat *b)
{
    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    for (uint32_t i = a->n; i-- > 0;)
        if (a->d[i] != b->d[i])
            return a->d[i] < b->d[i] ? -1 : 1;
    return 0;
}

static nat *nat_add(const nat *a, const nat *b)
{
    if (a->n < b->n) {
        const nat *t = a;
        a = b;
        b = t;
    }
    nat *c = nat_new(a->n + 1);
    uint64_t carry = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        carry += (uint64_t)a->d[i] + (i < b->n ? b->d[i] : 0);
        c->d[i] = (uint32_t)carry;
        carry >>= 32;
    }
    c->d[a->n] = (uint32_t)carry;
    c->n = a->n + 1;
    return nat_fit(c);
}

/* a − b, a ≥ b. */
static nat *nat_sub(const nat *a, const nat *b)
{
    if (nat_cmp(a, b) < 0)
        fail("subtraction would be negative");
    nat *c = nat_new(a->n);
    int64_t borrow = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        int64_t t = (int64_t)a->d[i] - (i < b->n ? b->d[i] : 0) - borrow;
        borrow = t < 0;
        c->d[i] = (uint32_t)(t + (borrow << 32));
    }
    c->n = a->n;
    return nat_fit(c);
}

static nat *nat_mul(const nat *a, const nat *b)
{
    nat *c = nat_new(a->n + b->n);
    memset(c->d, 0, (size_t)(a->n + b->n) * 4);
    for (uint32_t i = 0; i < a->n; i++) {
        uint64_t carry = 0;
        for (uint32_t j = 0; j < b->n; j++) {
            carry += (uint64_t)a->d[i] * b->d[j] + c->d[i + j];
            c->d[i + j] = (uint32_t)carry;
            carry >>= 32;
        }
        c->d[i + b->n] = (uint32_t)carry;
    }
    c->n = a->n + b->n;
    return nat_fit(c);
}

/* a·m + k, in place: a grows with realloc when it must. */
static nat *nat_mul_add_small(nat *a, uint32_t m, uint32_t k)
{
    uint64_t carry = k;
    for (uint32_t i = 0; i < a->n; i++) {
        carry += (uint64_t)a->d[i] * m;
        a->d[i] = (uint32_t)carry;
        carry >>= 32;
    }
    if (carry != 0) {
        if (a->n == a->cap) {
            nat *b = realloc(a, sizeof(nat) + (size_t)(a->cap + 1) * 4);
            if (b == NULL)
                fail("realloc to %u limbs returned NULL", a->cap + 1);
            a = b;
            a->cap++;
        }
        a->d[a->n++] = (uint32_t)carry;
    }
    return a;
}

static uint32_t nat_mod_small(const nat *a, uint32_t w)
{
    uint64_t r = 0;
    for (uint32_t i = a->n; i-- > 0;)
        r = ((r << 32) | a->d[i]) % w;
    return (uint32_t)r;
}

static nat *nat_div_small(const nat *a, uint32_t w, uint32_t *rem)
{
    nat *q = nat_new(a->n);
    uint64_t r = 0;
    for (uint32_t i = a->n; i-- > 0;) {
        uint64_t cur = (r << 32) | a->d[i];
        q->d[i] = (uint32_t)(cur / w);
        r = cur % w;
    }
    q->n = a->n;
    if (rem != NULL)
        *rem = (uint32_t)r;
    return nat_fit(q);
}

/* a / b (b ≠ 0), and a mod b into *rem if rem is not NULL: Knuth's algorithm D. */
static nat *nat_div(const nat *a, const nat *b, nat **rem)
{
    if (b->n == 0)
        fail("division by zero");
    if (nat_cmp(a, b) < 0) {
        if (rem != NULL)
            *rem = nat_copy(a);
        return nat_new(1);
    }
    if (b->n == 1) {
        uint32_t r;
        nat *q = nat_div_small(a, b->d[0], &r);
        if (rem != NULL)
            *rem = nat_u64(r);
        return q;
    }
    uint32_t n = b->n, m = a->n - b->n;
    int s = __builtin_clz(b->d[n - 1]);
    /* The normalized divisor and dividend: temporaries of their own. */
    uint32_t *vn = xmalloc((size_t)n * 4), *un = xmalloc((size_t)(a->n + 1) * 4);
    for (uint32_t i = n - 1; i > 0; i--)
        vn[i] = (uint32_t)(((uint64_t)b->d[i] << s) | ((uint64_t)b->d[i - 1] >> (32 - s)));
    vn[0] = b->d[0] << s;
    un[a->n] = (uint32_t)((uint64_t)a->d[a->n - 1] >> (32 - s));
    for (uint32_t i = a->n - 1; i > 0; i--)
        un[i] = (uint32_t)(((uint64_t)a->d[i] << s) | ((uint64_t)a->d[i - 1] >> (32 - s)));
    un[0] = a->d[0] << s;
    nat *q = nat_new(m + 1);
    q->n = m + 1;
    for (uint32_t j = m + 1; j-- > 0;) {
        uint64_t num = ((uint64_t)un[j + n] << 32) | un[j + n - 1];
        uint64_t qhat = num / vn[n - 1], rhat = num % vn[n - 1];
        while (qhat >> 32 != 0 || qhat * vn[n - 2] > ((rhat << 32) | un[j + n - 2])) {
            qhat--;
            rhat += vn[n - 1];
            if (rhat >> 32 != 0)
                break;
        }
        int64_t k = 0, t;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t p = qhat * vn[i];
            t = (int64_t)un[i + j] - k - (int64_t)(p & 0xFFFFFFFFu);
            un[i + j] = (uint32_t)t;
            k = (int64_t)(p >> 32) - (t >> 32);
        }
        t = (int64_t)un[j + n] - k;
        un[j + n] = (uint32_t)t;
        if (t < 0) {
            qhat--;
            uint64_t c = 0;
            for (uint32_t i = 0; i < n; i++) {
                c += (uint64_t)un[i + j] + vn[i];
                un[i + j] = (uint32_t)c;
                c >>= 32;
            }
            un[j + n] += (uint32_t)c;
        }
        q->d[j] = (uint32_t)qhat;
    }
    if (rem != NULL) {
        nat *r = nat_new(n);
        for (uint32_t i = 0; i < n; i++)
            r->d[i] = (uint32_t)(((uint64_t)un[i] >> s) | ((uint64_t)un[i + 1] << (32 - s)));
        r->n = n;
        *rem = nat_fit(r);
    }
    free(vn);
    free(un);
    return nat_fit(q);
}

static nat *nat_parse(const char *digits)
{
    nat *a = nat_new(1);
    for (const char *c = digits; *c; c++)
        a = nat_mul_add_small(a, 10, (uint32_t)(*c - '0'));
    return a;
}

/* floor(sqrt(a)), by Newton's iteration from a power of two above it. */
static nat *nat_isqrt(const nat *a)
{
    uint32_t bits = a->n ? 32 * (a->n - 1) + 32 - __builtin_clz(a->d[a->n - 1]) : 0;
    uint32_t k = (bits + 1) / 2;
    nat *x = nat_new(k / 32 + 1);
    memset(x->d, 0, (size_t)(k / 32 + 1) * 4);
    x->d[k / 32] = 1u << (k % 32);
    x->n = k / 32 + 1;
    for (;;) {
        nat *qa = nat_div(a, x, NULL);
        nat *sum = nat_add(x, qa);
        nat *y = nat_div_small(sum, 2, NULL);
        free(qa);
        free(sum);
        if (nat_cmp(y, x) >= 0) {
            free(y);
            return x;
        }
        free(x);
        x = y;
    }
}

static int nat_is_small(const nat *a, uint32_t v)
{
    return (a->n == 0 && v == 0) || (a->n == 1 && a->d[0] == v);
}

/* ---- relations ----------------------------------------------------------------------------- */

typedef struct relation {
    struct relation *next;
    nat *q;          /* the d' that factored */
    uint32_t large;  /* what is left after the factor base: 1, or a number < 2^32 */
    uint32_t nexp;   /* exponents known (the byte array's length) */
    unsigned char *exp; /* the exponent of each prime of the factor base */
} relation;

static uint32_t primes[PRIME_BOUND];
static uint32_t nprimes;
static relation *relations;
static uint32_t nrelations;

/* Fails the run unless the relation multiplies back to its q; frees it. */
static void retire(relation *r)
{
    nat *x = nat_u64(r->large);
    for (uint32_t i = 0; i < r->nexp; i++) {
        for (unsigned e = 0; e < r->exp[i]; e++) {
            nat *p = nat_u64(primes[i]);
            nat *y = nat_mul(x, p);
            free(p);
            free(x);
            x = y;
        }
    }
    if (nat_cmp(x, r->q) != 0)
        fail("a relation does not multiply back to its value");
    free(x);
    free(r->q);
    free(r->exp);
    free(r);
}

/* Trial-divides q by the factor base; keeps a relation if what is left fits in 32 bits. Returns
 * 1 for a full relation, 2 for a partial one combined with an earlier one, else 0. */
static int factor(const nat *q)
{
    nat *rest = nat_copy(q);
    unsigned char *exp = NULL;
    uint32_t nexp = 0;
    for (uint32_t i = 0; i < nprimes && rest->n > 0; i++) {
        while (nat_mod_small(rest, primes[i]) == 0) {
            nat *smaller = nat_div_small(rest, primes[i], NULL);
            free(rest);
            rest = smaller;
            if (nexp <= i) {
                unsigned char *grown = realloc(exp, i + 1);
                if (grown == NULL)
                    fail("realloc to %u bytes returned NULL", i + 1);
                memset(grown + nexp, 0, i + 1 - nexp);
                exp = grown;
                nexp = i + 1;
            }
            exp[i]++;
        }
    }
    if (rest->n > 1) {
        free(rest);
        free(exp);
        return 0;
    }
    relation *r = xmalloc(sizeof *r);
    *r = (relation){NULL, nat_copy(q), rest->n ? rest->d[0] : 0, nexp, exp};
    free(rest);
    int found = r->large == 1 ? 1 : 0;
    if (r->large != 1) {
        /* A partial relation: combined with an earlier one with the same large prime. */
        for (relation **p = &relations; *p != NULL; p = &(*p)->next) {
            if ((*p)->large == r->large) {
                relation *old = *p;
                *p = old->next;
                nrelations--;
                retire(old);
                found = 2;
                break;
            }
        }
    }
    r->next = relations;
    relations = r;
    if (++nrelations >= RELATIONS) {
        relation *p = relations;
        for (uint32_t i = 1; i < RELATIONS / 2; i++)
            p = p->next;
        relation *old = p->next;
        p->next = NULL;
        nrelations = RELATIONS / 2;
        while (old != NULL) {
            relation *next = old->next;
            retire(old);
            old = next;
        }
    }
    return found;
}

int main(int argc, char **argv)
{
    double scale = parse_scale(argc, argv);
    uint64_t steps = scaled(STEPS, scale, 100);
    nat *big = nat_parse(NUMBER);
    primes[nprimes++] = 2;
    for (uint32_t p = 3; p < PRIME_BOUND; p += 2) {
        int prime = 1;
        for (uint32_t k = 3; k * k <= p; k += 2)
            prime &= p % k != 0;
        uint32_t r = nat_mod_small(big, p);
        int square = r == 0;
        for (uint32_t x = 1; x < p && !square; x++)
            square = (uint64_t)x * x % p == r;
        if (prime && square)
            primes[nprimes++] = p;
    }
    nat *a0 = nat_isqrt(big);
    nat *m = nat_u64(0), *d = nat_u64(1), *a = nat_copy(a0);
    uint64_t sum = 0, full = 0, combined = 0;
    for (uint64_t k = 0; k < steps; k++) {
        nat *da = nat_mul(d, a);
        nat *m2 = nat_sub(da, m);
        nat *sq = nat_mul(m2, m2);
        nat *num = nat_sub(big, sq);
        nat *rem;
        nat *d2 = nat_div(num, d, &rem);
        if (!nat_is_small(rem, 0))
            fail("step %llu: N - m^2 is not a multiple of d", (unsigned long long)k);
        nat *s = nat_add(a0, m2);
        nat *a2 = nat_div(s, d2, NULL);
        free(da);
        free(sq);
        free(num);
        free(rem);
        free(s);
        free(m);
        free(d);
        free(a);
        m = m2;
        d = d2;
        a = a2;
        sum = sum * 31 + (a->n ? a->d[0] : 0) + (d->n ? d->d[0] : 0);
        switch (factor(d)) {
        case 1:
            full++;
            break;
        case 2:
            combined++;
            break;
        }
    }
    while (relations != NULL) {
        relation *next = relations->next;
        retire(relations);
        relations = next;
    }
    free(m);
    free(d);
    free(a);
    free(a0);
    free(big);
    report(sum ^ (full << 48) ^ (combined << 32));
    return 0;
}
