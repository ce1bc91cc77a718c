/* test_cache.c - lib/cache on the CPU backend: creation, clearing and sizes; page lists with
 * reference counts and copy-on-write; clones that share entry pages (appending to one leaves
 * the other bitwise unchanged, each matches a context that computed its sequence itself, and
 * either may be freed first); the engine's snapshot and restore; the shadow set and its commit;
 * every backend allocation of a clone, a shadow and a layer call failing in turn; the rollback
 * history (history.c) through the same failures. Comparisons are bitwise: layer outputs and
 * every byte of the caches. Run it under valgrind for leaks. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cache/cache.h"
#include "ctx/ctx.h"
#include "testutil.h"
#include "runner.h"

/* tiny: 4 layers of ratios 0, 4, 128, 4, window 128 (2 ring pages). T1 tokens leave the last
 * entry page of every compressor partly filled (75 entries at ratio 4, 2 at ratio 128), and the
 * T2 that follow write into it. */
#define T1 300
#define T2 60
#define NT (T1 + T2)

static hc_model *g_model;
static int g_layers, g_dim;
static float *g_x, *g_z; /* two sequences [layer][NT][dim] */

static void setup(void)
{
    ck_assert_int_eq(hc_model_create_random("tiny", 11, NULL, &g_model), HC_OK);
    g_layers = hc_model_n_layers(g_model);
    g_dim = hc_model_dim(g_model);
    g_x = malloc(sizeof(float) * (size_t)g_layers * NT * g_dim);
    g_z = malloc(sizeof(float) * (size_t)g_layers * NT * g_dim);
    tu_fill_normal(g_x, (size_t)g_layers * NT * g_dim, 3, 1.0f);
    tu_fill_normal(g_z, (size_t)g_layers * NT * g_dim, 4, 1.0f);
}

static void teardown(void)
{
    hc_model_free(g_model);
    free(g_x), free(g_z);
}

static hc_ctx *make_ctx_r(int64_t max_rollback)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.n_threads = 2;
    p.cache_format = HC_CACHE_FP8;
    p.max_rollback = max_rollback;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_OK);
    return c;
}
static hc_ctx *make_ctx(void) { return make_ctx_r(0); }

static float *new_y(void) { return calloc((size_t)g_layers * NT * g_dim, sizeof(float)); }

/* Tokens [t0, t1) of sequence x through every layer as one chunk; outputs into y (same shape as x). */
static void run(hc_ctx *c, const float *x, int64_t t0, int64_t t1, float *y)
{
    ck_assert_int_eq(hc_ctx_n_tokens(c), t0);
    for (int l = 0; l < g_layers; l++) {
        size_t off = ((size_t)l * NT + (size_t)t0) * g_dim;
        ck_assert_msg(hc_append(c, l, x + off, t1 - t0, y + off) == HC_OK, "append: %s", hc_ctx_last_error(c));
    }
}

static void assert_same_y(const float *a, const float *b, int64_t t0, int64_t t1)
{
    for (int l = 0; l < g_layers; l++) {
        size_t off = ((size_t)l * NT + (size_t)t0) * g_dim;
        ck_assert_msg(memcmp(a + off, b + off, sizeof(float) * (size_t)(t1 - t0) * g_dim) == 0,
                      "layer %d outputs differ", l);
    }
}

/* A context whose caches are a clone of src's (the public fork API does not exist yet). */
static hc_ctx *clone_ctx(hc_ctx *src)
{
    hc_ctx *c = make_ctx();
    hci_cache_free(c->be, c->layers, g_layers);
    c->layers = NULL;
    ck_assert_int_eq(hci_cache_clone(c->be, src->layers, g_layers, &c->layers), HC_OK);
    c->n_tokens = src->n_tokens;
    return c;
}

/* ---- every byte of a context's caches, in one host buffer ---- */

typedef struct dump {
    uint8_t *p;
    size_t n;
} dump;

static void put(dump *d, const void *src, size_t n)
{
    d->p = realloc(d->p, d->n + n);
    ck_assert_ptr_nonnull(d->p);
    memcpy(d->p + d->n, src, n);
    d->n += n;
}

static void put_dev(dump *d, hc_ctx *c, const void *src, size_t n)
{
    void *h = malloc(n);
    ck_assert_int_eq(c->be->ops->download(c->be, h, src, n), HC_OK);
    put(d, h, n);
    free(h);
}

static void put_pages(dump *d, hc_ctx *c, const hci_page_list *l)
{
    put(d, &l->n_pages, sizeof l->n_pages);
    for (int i = 0; i < l->n_pages; i++) put_dev(d, c, l->pages[i], l->page_bytes);
}

static dump dump_cache(hc_ctx *c)
{
    dump d = {NULL, 0};
    for (int l = 0; l < g_layers; l++) {
        hci_layer_cache *lc = &c->layers[l];
        put_pages(&d, c, &lc->ring);
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            hci_comp_cache *cc = hci_cache_comp(lc, k);
            if (!cc) continue;
            put(&d, &cc->n_entries, sizeof cc->n_entries);
            put_dev(&d, c, cc->state_kv, hci_comp_state_floats(cc) * sizeof(float));
            put_dev(&d, c, cc->state_score, hci_comp_state_floats(cc) * sizeof(float));
            put_pages(&d, c, &cc->entries);
        }
    }
    return d;
}

/* Every byte of a context's rollback history. */
static dump dump_history(hc_ctx *c)
{
    dump d = {NULL, 0};
    for (int l = 0; l < g_layers; l++) {
        hci_layer_cache *lc = &c->layers[l];
        put(&d, &lc->win_log_slots, sizeof lc->win_log_slots);
        put_pages(&d, c, &lc->win_log);
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            hci_comp_cache *cc = hci_cache_comp(lc, k);
            if (!cc) continue;
            size_t b = (size_t)cc->log.cap * cc->coff * cc->dc * sizeof(float);
            put(&d, &cc->log.cap, sizeof cc->log.cap);
            if (b) put_dev(&d, c, cc->log.kv, b), put_dev(&d, c, cc->log.score, b);
        }
    }
    return d;
}

static void assert_same_dump(dump a, dump b, const char *what)
{
    ck_assert_msg(a.n == b.n && memcmp(a.p, b.p, a.n) == 0, "%s: caches differ", what);
}

/* ---- sizes ---- */

static uint64_t entry_page_bytes(hc_ctx *c, int64_t n_tokens)
{
    uint64_t b = 0;
    for (int l = 0; l < g_layers; l++)
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *cc = hci_cache_comp_const(&c->layers[l], k);
            if (cc) b += (uint64_t)((n_tokens / cc->ratio + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES) * cc->entries.page_bytes;
        }
    return b;
}

static uint64_t fixed_bytes(hc_ctx *c) /* ring and states */
{
    uint64_t b = 0;
    for (int l = 0; l < g_layers; l++) {
        const hci_layer_cache *lc = &c->layers[l];
        b += (uint64_t)lc->ring.n_pages * lc->ring.page_bytes;
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *cc = hci_cache_comp_const(lc, k);
            if (cc) b += 2 * hci_comp_state_floats(cc) * sizeof(float);
        }
    }
    return b;
}

/* Every state row (0, -inf), no entries. */
static void assert_empty(hc_ctx *c, const hci_layer_cache *lcs)
{
    for (int l = 0; l < g_layers; l++)
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *cc = hci_cache_comp_const(&lcs[l], k);
            if (!cc) continue;
            ck_assert_int_eq(cc->n_entries, 0);
            ck_assert_int_eq(cc->entries.n_pages, 0);
            size_t nf = hci_comp_state_floats(cc);
            float *kv = malloc(nf * sizeof(float)), *sc = malloc(nf * sizeof(float));
            ck_assert_int_eq(c->be->ops->download(c->be, kv, cc->state_kv, nf * sizeof(float)), HC_OK);
            ck_assert_int_eq(c->be->ops->download(c->be, sc, cc->state_score, nf * sizeof(float)), HC_OK);
            for (size_t i = 0; i < nf; i++) {
                ck_assert(kv[i] == 0.0f && !signbit(kv[i]));
                ck_assert(isinf(sc[i]) && sc[i] < 0);
            }
            free(kv), free(sc);
        }
}

START_TEST(create_clear_bytes)
{
    hc_ctx *c = make_ctx();
    static const int ratios[4] = {0, 4, 128, 4};
    for (int l = 0; l < g_layers; l++) {
        hci_layer_cache *lc = &c->layers[l];
        ck_assert_int_eq(lc->ratio, ratios[l]);
        ck_assert_int_eq(lc->ring.n_pages, 2);
        ck_assert_uint_eq(lc->ring.page_bytes, 64u * 200u); /* fp8: 64 nope codes + 64 rope bf16 + 8 */
        ck_assert_int_eq(hci_page_refcount(&lc->ring, 0), 1);
        ck_assert_int_eq(hci_cache_comp(lc, 0) != NULL, ratios[l] != 0);
        ck_assert_int_eq(hci_cache_comp(lc, 1) != NULL, ratios[l] == 4);
        ck_assert_ptr_null(hci_cache_comp(lc, 2));
    }
    ck_assert_ptr_eq(hci_cache_comp(&c->layers[1], 1), &c->layers[1].idx);
    ck_assert_uint_eq(c->layers[1].idx.entries.page_bytes, 64u * 68u);
    assert_empty(c, c->layers);
    uint64_t fixed = fixed_bytes(c);
    /* ring: 2 pages a layer; states, kv and score: [8][256] floats for both compressors of a
     * ratio-4 layer, [128][128] at ratio 128 */
    ck_assert_uint_eq(fixed, 4 * 2 * 64 * 200 + 2 * 2 * (2 * 8 * 256 * 4) + 2 * 128 * 128 * 4);
    hci_cache_usage u = hci_cache_bytes(c->layers, g_layers);
    ck_assert_uint_eq(u.own, fixed);
    ck_assert_uint_eq(u.shared, 0);
    ck_assert_uint_eq(hc_ctx_memory_bytes(c), fixed);
    ck_assert_uint_eq(hci_cache_max_state_floats(c->layers, g_layers), 128 * 128);

    float *y = new_y();
    run(c, g_x, 0, T1, y);
    u = hci_cache_bytes(c->layers, g_layers);
    ck_assert_uint_eq(u.own, fixed + entry_page_bytes(c, T1));
    ck_assert_uint_eq(u.shared, 0);
    ck_assert_int_eq(c->layers[1].comp.n_entries, T1 / 4);
    ck_assert_int_eq(c->layers[1].comp.entries.n_pages, 2);
    ck_assert_int_eq(c->layers[2].comp.entries.n_pages, 1);

    ck_assert_int_eq(hc_ctx_reset(c), HC_OK); /* hci_cache_clear */
    assert_empty(c, c->layers);
    ck_assert_uint_eq(hc_ctx_memory_bytes(c), fixed);
    /* an empty context again: the same results as a new one */
    float *y2 = new_y();
    run(c, g_x, 0, T1, y2);
    assert_same_y(y, y2, 0, T1);

    /* a set of its own on the same backend */
    hci_layer_cache *set = NULL;
    ck_assert_int_eq(hci_cache_create(c->be, &c->model->cfg, HCI_FMT_BF16, &set), HC_OK);
    assert_empty(c, set);
    ck_assert_uint_eq(set[0].ring.page_bytes, 64u * 256u);
    ck_assert_uint_eq(hci_cache_bytes(set, g_layers).own,
                      4 * 2 * 64 * 256 + 2 * 2 * (2 * 8 * 256 * 4) + 2 * 128 * 128 * 4);
    hci_cache_free(c->be, set, g_layers);
    free(y), free(y2);
    hc_ctx_free(c);
}
END_TEST

/* Host blocks (what a load reads sessions into): contiguous, aligned, zero pages with slack
 * (blocks of 2 MiB and more on a 2 MiB boundary, for huge pages); pages freed one by one, in any
 * order and through shared lists, leave the others intact, and the block goes with its last page
 * (ASan and the slab registry see every page); a size near SIZE_MAX fails cleanly. */
START_TEST(host_block_pages)
{
    hc_ctx *c = make_ctx();
    hci_backend *be = c->be;
    ck_assert_ptr_nonnull(be->ops->pages_alloc_host);
    static const size_t sizes[] = {4352, 37376};
    for (size_t z = 0; z < 2; z++) {
        size_t pb = sizes[z];
        hci_page_list l, m;
        memset(&l, 0, sizeof l);
        l.page_bytes = pb;
        uint8_t *base = NULL;
        ck_assert_int_eq(hci_pages_grow_host(be, &l, 300, &base), HC_OK);
        ck_assert_int_eq(l.n_pages, 300);
        ck_assert_int_eq((uintptr_t)base % 4096, 0);
        if (300 * pb >= (2u << 20)) ck_assert_int_eq((uintptr_t)base % (2u << 20), 0);
        for (int i = 0; i < 300; i++) ck_assert_ptr_eq(l.pages[i], base + (size_t)i * pb);
        for (size_t j = 0; j < 300 * pb + 4096; j++) ck_assert_int_eq(base[j], 0);
        for (int i = 0; i < 300; i++) memset(l.pages[i], i & 0xff, pb);
        ck_assert_int_eq(hci_pages_share(be, &l, &m), HC_OK);
        hci_pages_drop(be, &l, 100); /* m still holds 100..299 */
        ck_assert_int_eq(hci_pages_grow(be, &l, 120), HC_OK); /* new pages elsewhere, zeroed */
        for (int i = 100; i < 120; i++) ck_assert_int_eq(((uint8_t *)l.pages[i])[pb - 1], 0);
        hci_pages_drop(be, &m, 150); /* pages 150..299 freed: whole runs handed back */
        hci_pages_drop(be, &l, 50);
        for (int i = 0; i < 150; i++) ck_assert_int_eq(((uint8_t *)m.pages[i])[pb / 2], i & 0xff);
        hci_pages_drop(be, &l, 0);
        hci_pages_drop(be, &m, 0);
    }
    void *p = NULL;
    ck_assert_int_eq(be->ops->pages_alloc_host(be, SIZE_MAX - 16384, 1, &p), HC_ERR_OUT_OF_MEMORY);
    hc_ctx_free(c);
}
END_TEST

/* The list primitives: sharing counts references, prepare copies exactly the shared pages that
 * will be written, drop frees a page with its last reference. */
/* Growth by many pages at once goes through the backend's bulk op (the CPU backend makes the
 * pages resident on its pool's threads): pages of several sizes, on a heap full of dirty freed
 * memory, come back zero-filled with one reference each, as page by page. */
START_TEST(bulk_pages)
{
    hc_ctx *c = make_ctx();
    hci_backend *be = c->be;
    ck_assert_ptr_nonnull(be->ops->pages_alloc);
    static const size_t sizes[] = {1000, 4096, 37376, 100000};
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        void *dirty[64];
        for (int i = 0; i < 64; i++) {
            dirty[i] = malloc(sizes[z]);
            memset(dirty[i], 0xa5, sizes[z]);
        }
        for (int i = 0; i < 64; i++) free(dirty[i]);
        hci_page_list l;
        memset(&l, 0, sizeof l);
        l.page_bytes = sizes[z];
        ck_assert_int_eq(hci_pages_grow(be, &l, 1), HC_OK); /* one page: page_alloc */
        ck_assert_int_eq(hci_pages_grow(be, &l, 70), HC_OK);
        ck_assert_int_eq(l.n_pages, 70);
        for (int i = 0; i < 70; i++) {
            const uint8_t *p = l.pages[i];
            for (size_t j = 0; j < sizes[z]; j++) ck_assert_int_eq(p[j], 0);
            ck_assert_int_eq(hci_page_refcount(&l, i), 1);
        }
        hci_pages_drop(be, &l, 0);
    }
    hc_ctx_free(c);
}
END_TEST

START_TEST(page_lists)
{
    hc_ctx *c = make_ctx();
    hci_backend *be = c->be;
    hci_page_list a, b;
    memset(&a, 0, sizeof a);
    a.page_bytes = 1000;
    ck_assert_int_eq(hci_pages_grow(be, &a, 3), HC_OK);
    ck_assert_int_eq(a.n_pages, 3);
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < a.page_bytes; j++) ck_assert_int_eq(((uint8_t *)a.pages[i])[j], 0);
        memset(a.pages[i], 10 + i, a.page_bytes);
        ck_assert_int_eq(hci_page_refcount(&a, i), 1);
    }
    ck_assert_int_eq(hci_pages_share(be, &a, &b), HC_OK);
    ck_assert_int_eq(b.n_pages, 3);
    ck_assert_uint_eq(b.page_bytes, 1000);
    ck_assert_ptr_ne(b.pages, a.pages);
    for (int i = 0; i < 3; i++) {
        ck_assert_ptr_eq(b.pages[i], a.pages[i]);
        ck_assert_int_eq(hci_page_refcount(&a, i), 2);
    }
    /* b writes pages 2..4: page 2 is copied, 3 and 4 are new, 0 and 1 stay shared */
    void *old2 = a.pages[2];
    ck_assert_int_eq(hci_pages_prepare(be, &b, 5, 2), HC_OK);
    ck_assert_int_eq(b.n_pages, 5);
    ck_assert_ptr_eq(b.pages[0], a.pages[0]);
    ck_assert_ptr_eq(b.pages[1], a.pages[1]);
    ck_assert_ptr_ne(b.pages[2], old2);
    ck_assert_ptr_eq(a.pages[2], old2);
    ck_assert_int_eq(memcmp(b.pages[2], a.pages[2], 1000), 0);
    int want_a[3] = {2, 2, 1}, want_b[5] = {2, 2, 1, 1, 1};
    for (int i = 0; i < 3; i++) ck_assert_int_eq(hci_page_refcount(&a, i), want_a[i]);
    for (int i = 0; i < 5; i++) ck_assert_int_eq(hci_page_refcount(&b, i), want_b[i]);
    memset(b.pages[2], 99, 1000);
    ck_assert_int_eq(((uint8_t *)a.pages[2])[0], 12);
    /* private pages: nothing to copy; a smaller count never shrinks */
    void *keep = b.pages[2];
    ck_assert_int_eq(hci_pages_prepare(be, &b, 3, 2), HC_OK);
    ck_assert_ptr_eq(b.pages[2], keep);
    ck_assert_int_eq(b.n_pages, 5);
    /* a drops its references: pages 0 and 1 live on in b alone */
    hci_pages_drop(be, &a, 1);
    ck_assert_int_eq(a.n_pages, 1);
    ck_assert_int_eq(hci_page_refcount(&b, 1), 1);
    hci_pages_drop(be, &a, 0);
    ck_assert_ptr_null(a.pages);
    ck_assert_int_eq(hci_page_refcount(&b, 0), 1);
    ck_assert_int_eq(((uint8_t *)b.pages[0])[999], 10);
    /* now b writes page 0: no copy */
    keep = b.pages[0];
    ck_assert_int_eq(hci_pages_prepare(be, &b, 5, 0), HC_OK);
    ck_assert_ptr_eq(b.pages[0], keep);
    hci_pages_drop(be, &b, 0);
    ck_assert_int_eq(b.n_pages, 0);
    ck_assert_int_eq(b.cap, 0);
    hc_ctx_free(c);
}
END_TEST

/* The clone's entry pages are the source's (count 2, reported shared); ring and states are
 * copies with the same bytes. */
START_TEST(clone_shares_entries)
{
    hc_ctx *a = make_ctx();
    float *y = new_y();
    run(a, g_x, 0, T1, y);
    dump da = dump_cache(a);
    hc_ctx *b = clone_ctx(a);
    dump db0 = dump_cache(b);
    assert_same_dump(db0, da, "clone");
    uint64_t shared = entry_page_bytes(a, T1), fixed = fixed_bytes(a);
    for (int l = 0; l < g_layers; l++) {
        hci_layer_cache *la = &a->layers[l], *lb = &b->layers[l];
        for (int p = 0; p < la->ring.n_pages; p++) {
            ck_assert_ptr_ne(lb->ring.pages[p], la->ring.pages[p]);
            ck_assert_int_eq(hci_page_refcount(&la->ring, p), 1);
            ck_assert_int_eq(hci_page_refcount(&lb->ring, p), 1);
        }
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            hci_comp_cache *ca = hci_cache_comp(la, k), *cb = hci_cache_comp(lb, k);
            ck_assert_int_eq(ca == NULL, cb == NULL);
            if (!ca) continue;
            ck_assert_ptr_ne(cb->state_kv, ca->state_kv);
            ck_assert_ptr_ne(cb->state_score, ca->state_score);
            ck_assert_int_eq(cb->n_entries, ca->n_entries);
            ck_assert_int_eq(cb->entries.n_pages, ca->entries.n_pages);
            ck_assert_int_gt(ca->entries.n_pages, 0);
            for (int p = 0; p < ca->entries.n_pages; p++) {
                ck_assert_ptr_eq(cb->entries.pages[p], ca->entries.pages[p]);
                ck_assert_int_eq(hci_page_refcount(&ca->entries, p), 2);
            }
        }
    }
    hci_cache_usage ua = hci_cache_bytes(a->layers, g_layers), ub = hci_cache_bytes(b->layers, g_layers);
    ck_assert_uint_eq(ua.shared, shared);
    ck_assert_uint_eq(ub.shared, shared);
    ck_assert_uint_eq(ua.own, fixed);
    ck_assert_uint_eq(ub.own, fixed);
    ck_assert_uint_eq(hc_ctx_memory_bytes(b), fixed + shared);
    /* the source goes first: the clone holds the pages alone, with the same bytes */
    hc_ctx_free(a);
    ub = hci_cache_bytes(b->layers, g_layers);
    ck_assert_uint_eq(ub.shared, 0);
    ck_assert_uint_eq(ub.own, fixed + shared);
    dump db = dump_cache(b);
    assert_same_dump(db, da, "clone after the source is freed");
    hc_ctx_free(b);
    free(da.p), free(db0.p), free(db.p), free(y);
}
END_TEST

/* Appending to either of a context and its clone leaves the other bitwise unchanged (the
 * partly filled last page of each compressor is shared and gets copied on write), and each
 * matches a context that computed its whole sequence itself. Then the clone is freed first. */
START_TEST(clone_copy_on_write)
{
    float *ya = new_y(), *yb = new_y(), *yx = new_y(), *yz = new_y(), *tmp = new_y();
    /* the references: x then x's continuation, x then z's continuation */
    hc_ctx *rx = make_ctx(), *rz = make_ctx();
    run(rx, g_x, 0, T1, tmp), run(rx, g_x, T1, NT, yx);
    run(rz, g_x, 0, T1, tmp), run(rz, g_z, T1, NT, yz);

    hc_ctx *a = make_ctx();
    run(a, g_x, 0, T1, tmp);
    hc_ctx *b = clone_ctx(a);
    dump b0 = dump_cache(b);
    run(a, g_x, T1, NT, ya);
    dump b1 = dump_cache(b);
    assert_same_dump(b1, b0, "the clone after the source appended");
    /* the shared partial pages were copied by a; the full ones are still shared */
    const hci_comp_cache *ca = &a->layers[1].comp, *cb = &b->layers[1].comp;
    ck_assert_int_eq(cb->entries.n_pages, 2);
    ck_assert_ptr_eq(ca->entries.pages[0], cb->entries.pages[0]);
    ck_assert_int_eq(hci_page_refcount(&cb->entries, 0), 2);
    ck_assert_ptr_ne(ca->entries.pages[1], cb->entries.pages[1]);
    ck_assert_int_eq(hci_page_refcount(&cb->entries, 1), 1);
    ck_assert_int_eq(hci_page_refcount(&ca->entries, 1), 1);

    dump a1 = dump_cache(a);
    run(b, g_z, T1, NT, yb);
    dump a2 = dump_cache(a);
    assert_same_dump(a2, a1, "the source after the clone appended");

    assert_same_y(ya, yx, T1, NT);
    assert_same_y(yb, yz, T1, NT);
    dump drx = dump_cache(rx), drz = dump_cache(rz), db = dump_cache(b);
    assert_same_dump(a2, drx, "source vs its reference");
    assert_same_dump(db, drz, "clone vs its reference");
    hc_ctx_free(b); /* the clone goes first */
    dump a3 = dump_cache(a);
    assert_same_dump(a3, drx, "source after the clone is freed");
    hc_ctx_free(a), hc_ctx_free(rx), hc_ctx_free(rz);
    free(b0.p), free(b1.p), free(a1.p), free(a2.p), free(a3.p), free(drx.p), free(drz.p), free(db.p);
    free(ya), free(yb), free(yx), free(yz), free(tmp);
}
END_TEST

/* A snapshot puts back entry counts, pages, ring and states; the pages that the preflight copied
 * stay private copies of the same bytes. */
START_TEST(snapshot_restore)
{
    hc_ctx *a = make_ctx();
    float *y = new_y();
    run(a, g_x, 0, T1, y);
    hc_ctx *b = clone_ctx(a);
    dump d0 = dump_cache(b);
    hci_backend *be = b->be;
    for (int copy = 0; copy < 2; copy++)
        for (int l = 0; l < g_layers; l++) {
            hci_layer_cache *lc = &b->layers[l];
            hci_cache_snap s;
            ck_assert_int_eq(hci_cache_snap_take(be, lc, copy, &s), HC_OK);
            ck_assert_int_eq(s.ring != NULL, copy);
            ck_assert_int_eq(hci_cache_prepare(be, lc, 4 * 64 * 8), HC_OK); /* 8 pages at ratio 4 */
            if (lc->ratio == 4) ck_assert_int_eq(lc->comp.entries.n_pages, 8);
            if (copy) { /* what a failing call may leave behind: scribbled ring and states */
                for (int p = 0; p < lc->ring.n_pages; p++) memset(lc->ring.pages[p], 0x5a, lc->ring.page_bytes);
                for (int k = 0; k < HCI_CACHE_COMPS; k++) {
                    hci_comp_cache *cc = hci_cache_comp(lc, k);
                    if (!cc) continue;
                    memset(cc->state_kv, 0x33, hci_comp_state_floats(cc) * sizeof(float));
                    memset(cc->state_score, 0x44, hci_comp_state_floats(cc) * sizeof(float));
                    cc->n_entries += 7;
                }
            }
            hci_cache_snap_restore(be, lc, &s);
            hci_cache_snap_free(be, &s);
            ck_assert_ptr_null(s.ring);
        }
    dump d1 = dump_cache(b);
    assert_same_dump(d1, d0, "restored");
    dump da = dump_cache(a);
    assert_same_dump(da, d0, "the source");
    /* the partial pages were unshared by the preflight, the full ones not */
    ck_assert_int_eq(hci_page_refcount(&b->layers[1].comp.entries, 0), 2);
    ck_assert_int_eq(hci_page_refcount(&b->layers[1].comp.entries, 1), 1);
    ck_assert_int_eq(hci_page_refcount(&b->layers[2].comp.entries, 0), 1);
    /* and both go on as references would */
    float *ya = new_y(), *yb = new_y();
    run(a, g_x, T1, NT, ya);
    run(b, g_x, T1, NT, yb);
    assert_same_y(ya, yb, T1, NT);
    hc_ctx_free(a), hc_ctx_free(b);
    free(d0.p), free(d1.p), free(da.p), free(y), free(ya), free(yb);
}
END_TEST

/* Copy every part of src's caches into the empty set dst (same geometry). */
static void fill_from(hc_ctx *c, hci_layer_cache *dst, const hci_layer_cache *src)
{
    hci_backend *be = c->be;
    for (int l = 0; l < g_layers; l++) {
        for (int p = 0; p < src[l].ring.n_pages; p++)
            ck_assert_int_eq(be->ops->copy(be, dst[l].ring.pages[p], src[l].ring.pages[p], src[l].ring.page_bytes), 0);
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *s = hci_cache_comp_const(&src[l], k);
            hci_comp_cache *d = hci_cache_comp(&dst[l], k);
            if (!s) continue;
            size_t b = hci_comp_state_floats(s) * sizeof(float);
            ck_assert_int_eq(be->ops->copy(be, d->state_kv, s->state_kv, b), 0);
            ck_assert_int_eq(be->ops->copy(be, d->state_score, s->state_score, b), 0);
            ck_assert_int_eq(hci_pages_grow(be, &d->entries, s->entries.n_pages), HC_OK);
            for (int p = 0; p < s->entries.n_pages; p++)
                ck_assert_int_eq(be->ops->copy(be, d->entries.pages[p], s->entries.pages[p], s->entries.page_bytes), 0);
            d->n_entries = s->n_entries;
        }
    }
}

/* A shadow is an empty set beside the context; dropped, it leaves the context as it was;
 * filled and committed, the context holds exactly what was filled in. */
START_TEST(shadow_commit)
{
    hc_ctx *a = make_ctx(), *src = make_ctx();
    float *y = new_y(), *ya = new_y(), *ys = new_y();
    run(a, g_x, 0, T1, y);
    run(src, g_z, 0, T1 / 2, y);
    dump d0 = dump_cache(a);
    uint64_t bytes0 = hc_ctx_memory_bytes(a);

    hci_layer_cache *sh = NULL;
    ck_assert_int_eq(hci_cache_shadow(a->be, a->layers, g_layers, &sh), HC_OK);
    assert_empty(a, sh);
    for (int l = 0; l < g_layers; l++) {
        ck_assert_int_eq(sh[l].ratio, a->layers[l].ratio);
        ck_assert_int_eq(sh[l].ring.n_pages, a->layers[l].ring.n_pages);
        for (int p = 0; p < sh[l].ring.n_pages; p++) {
            ck_assert_ptr_ne(sh[l].ring.pages[p], a->layers[l].ring.pages[p]);
            for (size_t j = 0; j < sh[l].ring.page_bytes; j++) ck_assert_int_eq(((uint8_t *)sh[l].ring.pages[p])[j], 0);
        }
    }
    hci_cache_free(a->be, sh, g_layers); /* abandoned: a load that failed */
    dump d1 = dump_cache(a);
    assert_same_dump(d1, d0, "after an abandoned shadow");
    ck_assert_uint_eq(hc_ctx_memory_bytes(a), bytes0);

    ck_assert_int_eq(hci_cache_shadow(a->be, a->layers, g_layers, &sh), HC_OK);
    fill_from(a, sh, src->layers);
    dump d2 = dump_cache(a);
    assert_same_dump(d2, d0, "while the shadow fills");
    hci_cache_commit(a->be, &a->layers, sh, g_layers);
    a->n_tokens = src->n_tokens;
    dump d3 = dump_cache(a), ds = dump_cache(src);
    assert_same_dump(d3, ds, "committed");
    ck_assert_uint_eq(hc_ctx_memory_bytes(a), hc_ctx_memory_bytes(src));
    run(a, g_x, T1 / 2, NT, ya);
    run(src, g_x, T1 / 2, NT, ys);
    assert_same_y(ya, ys, T1 / 2, NT);
    hc_ctx_free(a), hc_ctx_free(src);
    free(d0.p), free(d1.p), free(d2.p), free(d3.p), free(ds.p), free(y), free(ya), free(ys);
}
END_TEST

/* ---- out of memory: the one allocation number `g_fail_at` of backend memory fails ---- */

static const hci_backend_ops *g_real;
static hci_backend_ops g_failing;
static int g_fail_at, g_count;

static int fails(void) { return ++g_count == g_fail_at; }

static int failing_alloc(hci_backend *be, size_t bytes, void **out)
{
    if (!fails()) return g_real->alloc(be, bytes, out);
    *out = NULL;
    return HC_ERR_OUT_OF_MEMORY;
}

static int failing_page_alloc(hci_backend *be, size_t bytes, void **out)
{
    if (!fails()) return g_real->page_alloc(be, bytes, out);
    *out = NULL;
    return HC_ERR_OUT_OF_MEMORY;
}

static void arm(hc_ctx *c, int fail_at)
{
    g_real = c->be->ops == &g_failing ? g_real : c->be->ops;
    g_failing = *g_real;
    g_failing.alloc = failing_alloc, g_failing.page_alloc = failing_page_alloc;
    g_failing.pages_alloc = NULL; /* every page through page_alloc, which fails in turn */
    c->be->ops = &g_failing;
    g_fail_at = fail_at, g_count = 0;
}

static void disarm(hc_ctx *c) { c->be->ops = g_real; }

static void assert_refcounts(const hci_layer_cache *lcs, int want)
{
    for (int l = 0; l < g_layers; l++)
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *cc = hci_cache_comp_const(&lcs[l], k);
            for (int p = 0; cc && p < cc->entries.n_pages; p++) ck_assert_int_eq(hci_page_refcount(&cc->entries, p), want);
        }
}

/* Every allocation of a clone, a shadow and a layer call that copies shared pages fails in
 * turn: the call reports it and leaves everything as it was (valgrind: nothing leaks); the
 * next attempt without failure gives the references' results. */
START_TEST(out_of_memory)
{
    float *y = new_y(), *yb = new_y(), *yz = new_y();
    hc_ctx *rz = make_ctx();
    run(rz, g_x, 0, T1, y), run(rz, g_z, T1, NT, yz);
    hc_ctx *a = make_ctx();
    run(a, g_x, 0, T1, y);
    dump da = dump_cache(a);
    hci_layer_cache *out = NULL;
    int n_fail = 0;
    for (int f = 1;; f++) { /* clone */
        arm(a, f);
        int st = hci_cache_clone(a->be, a->layers, g_layers, &out);
        disarm(a);
        if (st == HC_OK) break;
        ck_assert_int_eq(st, HC_ERR_OUT_OF_MEMORY);
        ck_assert_ptr_null(out);
        assert_refcounts(a->layers, 1);
        n_fail++;
    }
    ck_assert_int_ge(n_fail, 10); /* ring pages and states of 4 layers */
    assert_refcounts(a->layers, 2);
    hci_cache_free(a->be, out, g_layers);
    assert_refcounts(a->layers, 1);
    for (int f = 1;; f++) { /* shadow */
        arm(a, f);
        int st = hci_cache_shadow(a->be, a->layers, g_layers, &out);
        disarm(a);
        if (st == HC_OK) break;
        ck_assert_ptr_null(out);
    }
    hci_cache_free(a->be, out, g_layers);
    dump d = dump_cache(a);
    assert_same_dump(d, da, "source");
    free(d.p);

    /* layer calls of the clone: snapshot buffers and the copies of shared pages fail */
    hc_ctx *b = clone_ctx(a);
    for (int l = 0; l < g_layers; l++) {
        size_t off = ((size_t)l * NT + T1) * g_dim;
        for (int f = 1;; f++) {
            dump before = dump_cache(b);
            arm(b, f);
            int st = hc_append(b, l, g_z + off, T2, yb + off);
            disarm(b);
            if (st == HC_OK) {
                free(before.p);
                break;
            }
            ck_assert_int_eq(st, HC_ERR_OUT_OF_MEMORY);
            ck_assert_int_eq(hc_ctx_next_layer(b), l);
            dump after = dump_cache(b);
            assert_same_dump(after, before, "after a failed call");
            free(before.p), free(after.p);
        }
    }
    assert_same_y(yb, yz, T1, NT);
    dump db = dump_cache(b), drz = dump_cache(rz);
    assert_same_dump(db, drz, "clone vs its reference");
    d = dump_cache(a);
    assert_same_dump(d, da, "source after the clone's calls");
    hc_ctx_free(b), hc_ctx_free(a), hc_ctx_free(rz);
    free(da.p), free(d.p), free(db.p), free(drz.p), free(y), free(yb), free(yz);
}
END_TEST

/* ---- the rollback history ---- */

/* Its geometry and bytes; a clone carries it (same bytes), a shadow has its geometry only, a
 * resize keeps what the new size covers, and every allocation of a create, a clone, a shadow and
 * a resize failing in turn leaves nothing behind (valgrind) and the history as it was. */
START_TEST(history_geometry_and_copies)
{
    hc_ctx *a = make_ctx_r(70);
    static const int caps[4][2] = {{0, 0}, {77, 77}, {197, 0}, {77, 77}};
    for (int l = 0; l < g_layers; l++) {
        ck_assert_int_eq(a->layers[l].win_log_slots, 128);
        ck_assert_int_eq(a->layers[l].win_log.n_pages, 2);
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *cc = hci_cache_comp_const(&a->layers[l], k);
            ck_assert_int_eq(cc ? cc->log.cap : 0, caps[l][k]);
        }
    }
    /* fp8 window entries of 200 bytes; rows of 2 x 128 (ratio 4) and 128 (ratio 128) floats */
    uint64_t want = 4 * 128 * 200ull + 2 * 2 * 77 * 256 * 4ull * 2 + 2 * 197 * 128 * 4ull;
    ck_assert_uint_eq(hci_hist_bytes(a->layers, g_layers), want);
    float *y = new_y();
    run(a, g_x, 0, T1, y);
    dump h = dump_history(a);
    hc_ctx *b = clone_ctx(a); /* make_ctx's set is replaced: no history, then the clone's */
    ck_assert_uint_eq(hci_hist_bytes(b->layers, g_layers), want);
    dump hb = dump_history(b);
    assert_same_dump(hb, h, "the clone's history");
    hci_layer_cache *sh = NULL;
    ck_assert_int_eq(hci_cache_shadow(a->be, a->layers, g_layers, &sh), HC_OK);
    ck_assert_uint_eq(hci_hist_bytes(sh, g_layers), want);
    hci_cache_free(a->be, sh, g_layers);
    /* out of memory in every allocation of a clone, a shadow, a resize */
    for (int what = 0; what < 3; what++) {
        int n_fail = 0;
        for (int f = 1;; f++) {
            hci_layer_cache *out = NULL;
            arm(a, f);
            int st = what == 0   ? hci_cache_clone(a->be, a->layers, g_layers, &out)
                     : what == 1 ? hci_cache_shadow(a->be, a->layers, g_layers, &out)
                                 : hci_hist_resize(a->be, a->layers, g_layers, 200, T1 - 70, T1);
            disarm(a);
            if (what < 2) hci_cache_free(a->be, out, g_layers);
            if (st == HC_OK) break;
            ck_assert_int_eq(st, HC_ERR_OUT_OF_MEMORY);
            n_fail++;
            dump d = dump_history(a);
            assert_same_dump(d, h, "history after a failed allocation");
            free(d.p);
        }
        ck_assert_int_ge(n_fail, 4);
        if (what == 2) { /* the resize went through: 200 tokens now, back to 70 */
            ck_assert_uint_gt(hci_hist_bytes(a->layers, g_layers), want);
            ck_assert_int_eq(hci_hist_resize(a->be, a->layers, g_layers, 70, T1 - 70, T1), HC_OK);
            a->hist_from = T1 - 70; /* what the resize kept */
        }
    }
    /* after the round trip through 200 the history still takes T1 back to T1 - 70 */
    hc_ctx *r = make_ctx();
    float *yr = new_y();
    run(r, g_x, 0, T1 - 70, yr);
    ck_assert_int_eq(hc_ctx_truncate(a, T1 - 70), HC_OK);
    /* entry slots past the count are not part of the state: compare once the same tokens
     * have written them again */
    run(a, g_z, T1 - 70, NT, y), run(r, g_z, T1 - 70, NT, yr);
    assert_same_y(y, yr, T1 - 70, NT);
    dump da = dump_cache(a), dr = dump_cache(r);
    assert_same_dump(da, dr, "after the truncation and the same tokens");
    hc_ctx_free(a), hc_ctx_free(b), hc_ctx_free(r);
    free(h.p), free(hb.p), free(da.p), free(dr.p), free(y), free(yr);
}
END_TEST

/* Layer calls that fail at every allocation in turn (chunks and single tokens) leave the history
 * byte for byte as it was; afterwards the context still takes its last R tokens back exactly. */
START_TEST(history_out_of_memory)
{
    const int64_t R = 40;
    float *y = new_y(), *yr = new_y();
    hc_ctx *a = make_ctx_r(R);
    run(a, g_x, 0, T1, y);
    const int64_t steps[] = {T2 / 2, 1, 1, T2 / 2 - 2};
    int64_t t = T1;
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        for (int l = 0; l < g_layers; l++) {
            size_t off = ((size_t)l * NT + (size_t)t) * g_dim;
            for (int f = 1;; f++) {
                dump before = dump_cache(a), hb = dump_history(a);
                arm(a, f);
                int st = hc_append(a, l, g_z + off, steps[s], y + off);
                disarm(a);
                if (st == HC_OK) {
                    free(before.p), free(hb.p);
                    break;
                }
                ck_assert_int_eq(st, HC_ERR_OUT_OF_MEMORY);
                dump after = dump_cache(a), ha = dump_history(a);
                assert_same_dump(after, before, "cache after a failed call");
                assert_same_dump(ha, hb, "history after a failed call");
                free(before.p), free(after.p), free(hb.p), free(ha.p);
            }
        }
        t += steps[s];
    }
    ck_assert_int_eq(hc_ctx_truncate_limit(a), NT - R);
    ck_assert_int_eq(hc_ctx_truncate(a, NT - R), HC_OK);
    hc_ctx *r = make_ctx();
    run(r, g_x, 0, T1, yr), run(r, g_z, T1, NT - R, yr);
    float *y2 = new_y(), *yr2 = new_y();
    run(a, g_x, NT - R, NT, y2), run(r, g_x, NT - R, NT, yr2);
    assert_same_y(y2, yr2, NT - R, NT);
    dump da = dump_cache(a), dr = dump_cache(r);
    assert_same_dump(da, dr, "after the truncation");
    hc_ctx_free(a), hc_ctx_free(r);
    free(da.p), free(dr.p), free(y), free(yr), free(y2), free(yr2);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("cache");
    TCase *tc = tcase_create("cache");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, create_clear_bytes);
    tcase_add_test(tc, page_lists);
    tcase_add_test(tc, bulk_pages);
    tcase_add_test(tc, host_block_pages);
    tcase_add_test(tc, clone_shares_entries);
    tcase_add_test(tc, clone_copy_on_write);
    tcase_add_test(tc, snapshot_restore);
    tcase_add_test(tc, shadow_commit);
    tcase_add_test(tc, out_of_memory);
    tcase_add_test(tc, history_geometry_and_copies);
    tcase_add_test(tc, history_out_of_memory);
    suite_add_tcase(s, tc);
    return s;
}
