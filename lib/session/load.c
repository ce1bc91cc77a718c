/* load.c - all-or-nothing load: the checked chunk stream fills a shadow cache (new pages and
 * state buffers in backend memory, reached only through the backend's ops); when the last
 * chunk has passed, the shadow is swapped into the context by pointer moves that cannot fail. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "entry.h"
#include "session.h"
#include "../util/error.h"
#include "../util/threadpool.h"

typedef struct shadow_layer {
    hci_page_list ring;
    hci_page_list ent[2];  /* comp, idx */
    float *kv[2], *sc[2];
} shadow_layer;

typedef struct loader {
    hc_ctx *c;
    const hcs_file *f;
    shadow_layer *sh;
    uint8_t *meta;
    uint8_t *ring;              /* host ring of the current layer, context format */
    float *kv, *sc;             /* host state of the current compressor */
    int rows[128];
    hci_entry_layout cm, xm;
} loader;

static hci_comp_cache *comp_of(hci_layer_cache *lc, int k)
{
    if (k == 0) return lc->ratio ? &lc->comp : NULL;
    return lc->ratio == 4 ? &lc->idx : NULL;
}

static void shadow_free(hc_ctx *c, shadow_layer *sh)
{
    hci_backend *be = c->be;
    for (int l = 0; sh && l < c->model->cfg.n_layers; l++) {
        be->ops->pages_shrink(be, &sh[l].ring, 0);
        for (int k = 0; k < 2; k++) {
            be->ops->pages_shrink(be, &sh[l].ent[k], 0);
            if (sh[l].kv[k]) be->ops->free(be, sh[l].kv[k]);
            if (sh[l].sc[k]) be->ops->free(be, sh[l].sc[k]);
        }
    }
    free(sh);
}

/* Ring pages and compressor states of the empty context: zero ring, (0, -inf) states. */
static int shadow_create(loader *ld, char *err, size_t errsz)
{
    hc_ctx *c = ld->c;
    hci_backend *be = c->be;
    int L = c->model->cfg.n_layers;
    ld->sh = calloc((size_t)L, sizeof *ld->sh);
    if (!ld->sh) return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    int st = HC_OK;
    for (int l = 0; l < L && !st; l++) {
        hci_layer_cache *lc = &c->layers[l];
        shadow_layer *s = &ld->sh[l];
        s->ring.page_bytes = lc->ring.page_bytes;
        st = be->ops->pages_grow(be, &s->ring, lc->ring.n_pages);
        for (int k = 0; k < 2 && !st; k++) {
            hci_comp_cache *cc = comp_of(lc, k);
            if (!cc) continue;
            s->ent[k].page_bytes = cc->entries.page_bytes;
            size_t nf = hci_comp_state_floats(cc);
            st = be->ops->alloc(be, nf * sizeof(float), (void **)&s->kv[k]);
            if (!st) st = be->ops->alloc(be, nf * sizeof(float), (void **)&s->sc[k]);
            for (size_t i = 0; i < nf; i++) ld->sc[i] = -INFINITY;
            if (!st) st = be->ops->upload(be, s->sc[k], ld->sc, nf * sizeof(float));
        }
    }
    if (st) return hci_errf(err, errsz, st, "out of %s memory for the loaded cache", be->ops->name);
    return HC_OK;
}

static int upload(loader *ld, void *dst, const void *src, size_t n, char *err, size_t errsz)
{
    hci_backend *be = ld->c->be;
    int st = be->ops->upload(be, dst, src, n);
    if (st) hci_errf(err, errsz, st, "writing the cache to the %s backend failed", be->ops->name);
    return st;
}

static int apply_window(loader *ld, const hcs_section *sec, const hcs_piece *p, int layer, char *err, size_t errsz)
{
    hci_layer_cache *lc = &ld->c->layers[layer];
    size_t pb = lc->ring.page_bytes;
    if (p->row0 == 0) memset(ld->ring, 0, pb * (size_t)lc->ring.n_pages);
    int64_t n = ld->f->rec.n_tokens, W = lc->window, p0 = n > W ? n - W : 0;
    for (uint32_t r = 0; r < p->rows; r++) {
        int64_t slot = (p0 + (int64_t)(p->row0 + r)) % W;
        uint32_t b = r / HCI_PAGE_ENTRIES;
        int k = (int)(p->rows - b * HCI_PAGE_ENTRIES < HCI_PAGE_ENTRIES ? p->rows - b * HCI_PAGE_ENTRIES : HCI_PAGE_ENTRIES);
        hcs_entry_from_canon(&ld->cm, p->raw + (size_t)b * HCI_PAGE_ENTRIES * ld->cm.entry_bytes, k,
                             (int)(r % HCI_PAGE_ENTRIES), &ld->xm, ld->ring + (size_t)(slot / HCI_PAGE_ENTRIES) * pb,
                             (int)(slot % HCI_PAGE_ENTRIES));
    }
    if (p->chunk + 1 < sec->n_chunks) return HC_OK;
    for (int i = 0; i < lc->ring.n_pages; i++) {
        int st = upload(ld, ld->sh[layer].ring.pages[i], ld->ring + (size_t)i * pb, pb, err, errsz);
        if (st) return st;
    }
    return HC_OK;
}

static int apply_state(loader *ld, const hcs_section *sec, const hcs_piece *p, int layer, int k, char *err,
                       size_t errsz)
{
    hci_comp_cache *cc = comp_of(&ld->c->layers[layer], k);
    size_t nf = hci_comp_state_floats(cc), w2 = (size_t)cc->coff * cc->dc;
    if (p->row0 == 0) {
        for (size_t i = 0; i < nf; i++) ld->kv[i] = 0.0f, ld->sc[i] = -INFINITY;
        hcs_state_rows(cc->ratio, ld->f->rec.n_tokens, ld->rows);
    }
    for (uint32_t r = 0; r < p->rows; r++) {
        int row = ld->rows[p->row0 + r];
        const uint8_t *in = p->raw + (size_t)r * sec->row_bytes;
        memcpy(ld->kv + (size_t)row * w2, in, w2 * sizeof(float));
        memcpy(ld->sc + (size_t)row * w2, in + w2 * sizeof(float), w2 * sizeof(float));
    }
    if (p->chunk + 1 < sec->n_chunks) return HC_OK;
    int st = upload(ld, ld->sh[layer].kv[k], ld->kv, nf * sizeof(float), err, errsz);
    if (!st) st = upload(ld, ld->sh[layer].sc[k], ld->sc, nf * sizeof(float), err, errsz);
    return st;
}

static int apply_entries(loader *ld, const hcs_piece *p, int layer, int k, char *err, size_t errsz)
{
    hci_backend *be = ld->c->be;
    hci_page_list *pl = &ld->sh[layer].ent[k];
    int nb = (int)((p->rows + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES), first = pl->n_pages;
    if ((uint64_t)first * HCI_PAGE_ENTRIES != p->row0) return hci_errf(err, errsz, HC_ERR_INTERNAL, "pages out of order");
    int st = be->ops->pages_grow(be, pl, first + nb);
    if (st) return hci_errf(err, errsz, st, "out of %s memory for the loaded cache", be->ops->name);
    for (int b = 0; b < nb && !st; b++)
        st = upload(ld, pl->pages[first + b], p->pages + (size_t)b * pl->page_bytes, pl->page_bytes, err, errsz);
    return st;
}

static int apply(void *arg, const hcs_piece *p, char *err, size_t errsz)
{
    loader *ld = arg;
    int32_t pi = ld->f->plan_of[p->sec];
    if (pi < 0) return HC_OK; /* an optional section of a newer writer */
    const hcs_plan_sec *ps = &ld->f->plan[pi];
    const hcs_section *sec = &ld->f->sec[p->sec];
    int layer = (int)ps->layer;
    switch (ps->type) {
    case HCS_SEC_METADATA: memcpy(ld->meta + p->row0, p->raw, p->rows); return HC_OK;
    case HCS_SEC_WINDOW: return apply_window(ld, sec, p, layer, err, errsz);
    case HCS_SEC_COMP: return apply_entries(ld, p, layer, 0, err, errsz);
    case HCS_SEC_INDEX: return apply_entries(ld, p, layer, 1, err, errsz);
    case HCS_SEC_COMP_STATE: return apply_state(ld, sec, p, layer, 0, err, errsz);
    case HCS_SEC_INDEX_STATE: return apply_state(ld, sec, p, layer, 1, err, errsz);
    default: return HC_OK;
    }
}

static void hex8(const uint8_t *p, char *out)
{
    for (int i = 0; i < 8; i++) sprintf(out + 2 * (size_t)i, "%02x", p[i]);
}

static int check_model(const hc_ctx *c, const hcs_file *f, char *err, size_t errsz)
{
    const hc_model *m = c->model;
    int st = hcs_config_compare(&f->cfg, &m->cfg, err, errsz);
    if (st) return st;
    if (memcmp(f->rec.fingerprint, m->fingerprint, 16) != 0)
        return hci_errf(err, errsz, HC_ERR_MODEL_MISMATCH, "the session's configuration fingerprint differs from this model's");
    if ((f->rec.has_weights != 0) != (m->has_weights != 0))
        return hci_errf(err, errsz, HC_ERR_MODEL_MISMATCH,
                        f->rec.has_weights ? "the session belongs to a model with weights; this model is geometry-only"
                                           : "the session was saved from a geometry-only model; it loads only into a "
                                             "geometry-only model of the same configuration");
    if (memcmp(f->rec.fingerprint + 16, m->fingerprint + 16, 16) != 0) {
        char a[17], b[17];
        hex8(f->rec.fingerprint + 16, a), hex8(m->fingerprint + 16, b);
        return hci_errf(err, errsz, HC_ERR_MODEL_MISMATCH,
                        "same configuration, different weights (session %s..., model %s...)", a, b);
    }
    return HC_OK;
}

static void commit(loader *ld)
{
    hc_ctx *c = ld->c;
    for (int l = 0; l < c->model->cfg.n_layers; l++) {
        hci_layer_cache *lc = &c->layers[l];
        shadow_layer *s = &ld->sh[l];
        hci_page_list t = lc->ring;
        lc->ring = s->ring, s->ring = t;
        for (int k = 0; k < 2; k++) {
            hci_comp_cache *cc = comp_of(lc, k);
            if (!cc) continue;
            t = cc->entries, cc->entries = s->ent[k], s->ent[k] = t;
            float *p = cc->state_kv;
            cc->state_kv = s->kv[k], s->kv[k] = p;
            p = cc->state_score, cc->state_score = s->sc[k], s->sc[k] = p;
            cc->n_entries = ld->f->rec.n_tokens / cc->ratio;
        }
    }
    shadow_free(c, ld->sh); /* now holds the old cache */
    ld->sh = NULL;
    free(c->meta);
    c->meta = ld->meta, c->meta_len = ld->f->rec.metadata_length;
    ld->meta = NULL;
    c->n_tokens = ld->f->rec.n_tokens;
    c->next_layer = 0, c->chunk_n = 0;
    c->sess_generation = ld->f->rec.generation;
}

int hcs_load(hc_ctx *c, const hcs_file *f, char *err, size_t errsz)
{
    int st = check_model(c, f, err, errsz);
    if (st) return st;
    if (f->rec.n_tokens > c->max_tokens)
        return hci_errf(err, errsz, HC_ERR_POSITION, "the session holds %" PRId64 " tokens, the context's maximum is %" PRId64,
                        f->rec.n_tokens, c->max_tokens);
    loader ld;
    memset(&ld, 0, sizeof ld);
    ld.c = c, ld.f = f;
    const hci_config *cfg = &c->model->cfg;
    ld.cm = hcs_canon_main(cfg);
    ld.xm = hci_layout_main(c->cache_fmt, cfg->head_dim, cfg->rope_dim);
    size_t nf = 1;
    for (int l = 0; l < cfg->n_layers; l++)
        for (int k = 0; k < 2; k++) {
            hci_comp_cache *cc = comp_of(&c->layers[l], k);
            if (cc && hci_comp_state_floats(cc) > nf) nf = hci_comp_state_floats(cc);
        }
    size_t ring = c->layers[0].ring.page_bytes * (size_t)c->layers[0].ring.n_pages;
    ld.ring = malloc(ring ? ring : 1);
    ld.kv = malloc(nf * sizeof(float));
    ld.sc = malloc(nf * sizeof(float));
    /* the metadata's size is proven by the file: METADATA is stored raw, inside the file */
    ld.meta = f->rec.metadata_length ? malloc((size_t)f->rec.metadata_length) : NULL;
    if (!ld.ring || !ld.kv || !ld.sc || (f->rec.metadata_length && !ld.meta))
        st = hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    if (!st) st = shadow_create(&ld, err, errsz);
    if (!st) st = hcs_file_stream(f, c->cache_fmt, hcs_workers(0, f->total_raw), apply, &ld, err, errsz);
    if (!st) commit(&ld);
    shadow_free(c, ld.sh);
    free(ld.meta), free(ld.ring), free(ld.kv), free(ld.sc);
    return st;
}
