/* One decoding step of a whole stack of pre-norm transformer blocks, batch 1, in a single call.
 *
 * With int8 or 4-bit weights a small model's step reads little memory (SmolLM2-135M: about 100 MB
 * at 8 bits, a few milliseconds), and what is left is the cost of asking: about 35 PyTorch
 * operations per block, each a few microseconds of dispatch, and seven Python-level layer calls.
 * Here one C call runs every block: the weights' products go to quant.c's kernels (the same
 * functions the layers call, so the same numbers), and the small parts between them (the norms,
 * rotary embedding, the KV-cache write, attention over the cache, the activation, the residual
 * adds) are plain loops over a few hundred floats.
 *
 * Each block computes, for the one new position p (x is (C,)):
 *   h = norm(x);  q, k, v = h Wq^T + bq, h Wk^T + bk, h Wv^T + bv (H or Hkv heads of hd)
 *   q, k rotated by the given cos/sin (rotate-half convention) if given; k, v written at cache row p
 *   per query head: softmax(q . K[0..p] * scale) . V[0..p], from its key/value head (GQA)
 *   x += (attention output) Wo^T + bo;  h = norm(x)
 *   x += (act(h Wg^T) * h Wu^T) Wd^T (gated: SwiGLU, GeGLU) or act(h Wu^T) Wd^T (GPT-2), with biases
 * and after the last block x = norm(x) when there is a final norm. norm is RMSNorm or LayerNorm
 * (weight, optional bias). Softmax subtracts the row maximum and sums in float, as PyTorch's does;
 * only the order of a few sums differs from it. Built without fast-math and without contraction
 * (build.py), every instruction-set path gives the same bits.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int gf_q8_linear(const float* x, int64_t ldx, const int8_t* q, const float* scale, const int32_t* rowsum,
                 const float* bias, float* y, int64_t M, int64_t I, int64_t O);
int gf_q4_linear(const float* x, int64_t ldx, const uint8_t* packed, const float* block_scale, const float* code,
                 const float* bias, float* y, int64_t M, int64_t I, int64_t O);

/* A quantized linear layer's buffers, read in place (layouts: quant.c). */
typedef struct {
    int64_t kind; /* 0: int8 rows (scale per row, rowsum); 1: 4-bit (block scales, code table) */
    int64_t in, out;
    const void* weight;
    const float* scale;
    const int32_t* rowsum;
    const float* code;
    const float* bias; /* or NULL */
} GfQLinear;

/* One block: its two norms (bias NULL for RMSNorm or none), seven layers (gate unused when the
 * feed-forward is not gated) and its slice of the KV cache. */
typedef struct {
    const float *attn_norm, *attn_norm_bias, *ffn_norm, *ffn_norm_bias;
    GfQLinear q, k, v, o, gate, up, down;
    float* k_cache; /* (Hkv, max_len, hd) */
    float* v_cache;
} GfBlock;

enum { NORM_RMS = 0, NORM_LAYER = 1 };
enum { ACT_SILU = 0, ACT_GELU = 1, ACT_GELU_TANH = 2, ACT_RELU = 3 };

/* Sizes and choices shared by every block of the stack, and the final norm (NULL: none). */
typedef struct {
    int64_t n_layers, dim, n_heads, n_kv_heads, head_dim, ffn_dim, max_len;
    int64_t norm, act, gated;
    float eps, scale;
    const float *final_norm, *final_norm_bias;
} GfStackShape;

static int linear(const GfQLinear* L, const float* x, float* y) {
    if (L->kind == 0) return gf_q8_linear(x, L->in, L->weight, L->scale, L->rowsum, L->bias, y, 1, L->in, L->out);
    return gf_q4_linear(x, L->in, L->weight, L->scale, L->code, L->bias, y, 1, L->in, L->out);
}

/* RMSNorm: w * x / sqrt(mean(x^2) + eps); LayerNorm: w * (x - mean) / sqrt(var + eps) + b. */
static void norm(int64_t kind, const float* x, const float* w, const float* b, float eps, int64_t n, float* out) {
    float mean = 0.0f, ss = 0.0f;
    if (kind == NORM_LAYER) {
        for (int64_t i = 0; i < n; i++) mean += x[i];
        mean /= (float)n;
    }
    for (int64_t i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
    const float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = w[i] * ((x[i] - mean) * r) + (b ? b[i] : 0.0f);
}

static inline float activate(int64_t act, float v) {
    switch (act) {
        case ACT_SILU: return v / (1.0f + expf(-v));
        case ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        case ACT_GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        default: return v > 0.0f ? v : 0.0f;
    }
}

/* x * cos + rotate_half(x) * sin, rotate_half(x) = (-x[hd/2:], x[:hd/2]), for each of n heads. */
static void rotate(float* x, int64_t n, int64_t hd, const float* cos, const float* sin) {
    const int64_t half = hd / 2;
    for (int64_t h = 0; h < n; h++) {
        float* r = x + h * hd;
        for (int64_t i = 0; i < half; i++) {
            const float a = r[i], b = r[i + half];
            r[i] = a * cos[i] - b * sin[i];
            r[i + half] = b * cos[i + half] + a * sin[i + half];
        }
    }
}

/* a . b over n floats in 16 running sums (lane i % 16), added in a fixed tree. One running sum
 * would be a chain of dependent adds (the build allows no reordering), and attention's scores are
 * a few thousand such dot products per step; sixteen independent lanes become vector code, and
 * their fixed order gives the same bits on every instruction set. */
static float dot(const float* a, const float* b, int64_t n) {
    float lane[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) lane[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; i++, l++) lane[l] += a[i] * b[i];
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; l++) lane[l] += lane[l + w];
    return lane[0];
}

/* Each query head over keys 0..n-1 of its key/value head; out: (H, hd); scores: n floats. */
static void attend(const float* q, const float* kc, const float* vc, const GfStackShape* s, int64_t n, float* scores,
                   float* out) {
    const int64_t hd = s->head_dim, group = s->n_heads / s->n_kv_heads;
    for (int64_t h = 0; h < s->n_heads; h++) {
        const float* qh = q + h * hd;
        const float* K = kc + (h / group) * s->max_len * hd;
        const float* V = vc + (h / group) * s->max_len * hd;
        float best = -INFINITY;
        for (int64_t t = 0; t < n; t++) {
            scores[t] = dot(qh, K + t * hd, hd) * s->scale;
            best = scores[t] > best ? scores[t] : best;
        }
        float total = 0.0f;
        for (int64_t t = 0; t < n; t++) total += (scores[t] = expf(scores[t] - best));
        float* o = out + h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int64_t t = 0; t < n; t++) {
            const float w = scores[t] / total;
            for (int64_t i = 0; i < hd; i++) o[i] += w * V[t * hd + i];
        }
    }
}

static int block_step(const GfBlock* b, const GfStackShape* s, float* x, const float* cos, const float* sin, int64_t pos,
                      float* work) {
    const int64_t C = s->dim, hd = s->head_dim, qd = s->n_heads * hd, kvd = s->n_kv_heads * hd;
    float *h = work, *q = h + C, *k = q + qd, *v = k + kvd, *att = v + kvd, *y = att + qd;
    float *g = y + C, *u = g + s->ffn_dim, *scores = u + s->ffn_dim;
    int rc;
    norm(s->norm, x, b->attn_norm, b->attn_norm_bias, s->eps, C, h);
    if ((rc = linear(&b->q, h, q)) || (rc = linear(&b->k, h, k)) || (rc = linear(&b->v, h, v))) return rc;
    if (cos) {
        rotate(q, s->n_heads, hd, cos, sin);
        rotate(k, s->n_kv_heads, hd, cos, sin);
    }
    for (int64_t j = 0; j < s->n_kv_heads; j++) { /* cache row pos of each key/value head */
        memcpy(b->k_cache + (j * s->max_len + pos) * hd, k + j * hd, (size_t)hd * sizeof(float));
        memcpy(b->v_cache + (j * s->max_len + pos) * hd, v + j * hd, (size_t)hd * sizeof(float));
    }
    attend(q, b->k_cache, b->v_cache, s, pos + 1, scores, att);
    if ((rc = linear(&b->o, att, y))) return rc;
    for (int64_t i = 0; i < C; i++) x[i] += y[i];
    norm(s->norm, x, b->ffn_norm, b->ffn_norm_bias, s->eps, C, h);
    if ((rc = linear(&b->up, h, u))) return rc;
    if (s->gated) {
        if ((rc = linear(&b->gate, h, g))) return rc;
        for (int64_t i = 0; i < s->ffn_dim; i++) g[i] = activate(s->act, g[i]) * u[i];
    } else {
        for (int64_t i = 0; i < s->ffn_dim; i++) g[i] = activate(s->act, u[i]);
    }
    if ((rc = linear(&b->down, g, y))) return rc;
    for (int64_t i = 0; i < C; i++) x[i] += y[i];
    return 0;
}

/* x: (dim,) the new token's embedding, replaced by the stack's output (after the final norm when
 * there is one); cos, sin: (head_dim,) at the new position, or NULL for no rotary embedding; pos:
 * cache rows already filled (the new keys go to row pos, pos < max_len). Returns 0, -1 for bad
 * sizes, -2 when memory runs out, or the first kernel's error. */
int gf_decode_step(const GfBlock* blocks, const GfStackShape* s, float* x, const float* cos, const float* sin,
                   int64_t pos) {
    if (pos < 0 || pos >= s->max_len || s->n_kv_heads < 1 || s->n_heads % s->n_kv_heads || s->head_dim % 2) return -1;
    const int64_t floats = 3 * s->dim + 2 * s->n_heads * s->head_dim + 2 * s->n_kv_heads * s->head_dim +
                           2 * s->ffn_dim + s->max_len;
    float* work = malloc((size_t)floats * sizeof(float));
    if (!work) return -2;
    int rc = 0;
    for (int64_t l = 0; l < s->n_layers && !rc; l++) rc = block_step(blocks + l, s, x, cos, sin, pos, work);
    if (!rc && s->final_norm) {
        norm(s->norm, x, s->final_norm, s->final_norm_bias, s->eps, s->dim, work);
        memcpy(x, work, (size_t)s->dim * sizeof(float));
    }
    free(work);
    return rc;
}
