/* Quantized matrix-vector products for CPU decoding: y (M, O) = x (M, I) . W^T + b for M of 1 to 8,
 * with W stored in the layouts of glassformer/quant (read in place: no packed copy).
 *
 * Decoding streams every weight once per token, so fewer bytes per weight is the way past the
 * float32 kernel's memory-speed limit (linear.c): 1 byte (int8) or half a byte (4-bit) instead of 4.
 * The price is decoding the weights back into numbers the multipliers take, which must stay cheaper
 * than the memory it saves; each path below picks the instructions that do that on its target.
 *
 * int8, weight-only per output row (quant/int8.py: q (O, I) int8 row-major, scale (O,) float32).
 *   x is quantized per row to 16 bits on entry: xs = absmax / 32767, xq = round_even(x * (32767 /
 *   absmax)), so |x - xq * xs| <= xs / 2 plus float32 rounding (about 3 ulp of x). Then every path
 *   computes the same EXACT integer S[o] = sum_i q[o, i] * xq[i] (int64), and the same float32
 *   epilogue y = (float)S * (xs * scale[o]) + b: all paths give bit for bit the same results.
 *   The error against x . Wdeq^T (Wdeq = q * scale) is at most sum_i |Wdeq[o, i]| (xs / 2 + 3u|x_i|)
 *   plus a few roundings of y: about 1e-5 of y's size for ordinary activations, far inside the
 *   1e-3 budget, where quantizing x to 8 bits (llama.cpp's way) costs about 1e-2.
 *   - AVX2: sign-extend 16 weights to int16 and _mm256_madd_epi16 them with xq (16 products, pairs
 *     summed into 8 int32 lanes): 3 instructions per 16 weights, against 6 for int8 -> float + mul.
 *   - AVX-512 BW: the same, 32 weights per instruction.
 *   - AVX-512 VNNI: _mm512_dpbusd_epi32 (64 u8 x s8 products into 16 int32 lanes) wants one unsigned
 *     byte operand, so xq + 32768 (1..65535) is split into a high and a low byte, two dpbusd per 64
 *     weights; S = 256 * sum(q * hi) + sum(q * lo) - 32768 * rowsum[o] (rowsum given by the caller).
 *   int32 lanes are summed into int64 every Q8_CHUNK inputs, below any overflow (|q| <= 128).
 *
 * 4-bit NF4/FP4 (quant/nf4.py): byte k of the row-major flattened weight holds element 2k in its
 *   high nibble and 2k + 1 in its low one; one float32 scale per block of 64 (the double-quantized
 *   absmax, dequantized once by the caller); I % 64 == 0 so that blocks never cross a row. Per
 *   block the 16 code values are multiplied by the block's scale (the same float32 products as
 *   dequantize_4bit), so a table lookup yields exactly the dequantized weight. 16 bytes give 32
 *   weights: the high nibbles are the even elements, the low ones the odd, so x is reordered once
 *   per call to match (per 32 inputs: the 16 even ones, then the 16 odd ones).
 *   - AVX-512: _mm512_permutexvar_ps looks 16 codes up in the 16-entry table at once.
 *   - AVX2: two _mm256_permutevar8x32_ps (entries 0-7 and 8-15) and a blend on the code's bit 3.
 *   Sums are kept in GCC vectors of 16 floats with a fixed order and no fused multiply-adds, as in
 *   linear.c, so every path rounds the same way too.
 * Threads: OpenMP over output rows, sharing PyTorch's runtime (see linear.c).
 */
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define QMAX_ROWS 8
#define XQ_LEVELS 32767.0f
#define Q8_CHUNK 2048 /* inputs per int32 pass: lanes stay below 2^31 on every path */
#define Q4_BLOCK 64
#define PAR_MIN 32768 /* weights below which one thread is faster than waking the others */

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define Q8_VNNI 1
#else
#define Q8_VNNI 0
#endif

typedef float v16 __attribute__((vector_size(64), aligned(4), may_alias));

static inline v16 ld16(const float* p) { return *(const v16*)p; }

/* Round to nearest, ties to even, for |v| < 2^22 (adding 1.5 * 2^23 drops the fraction): the same
 * in scalar and vector code on every target, with no libm call. */
static inline float round_even(float v) {
    const float magic = 12582912.0f;
    return (v + magic) - magic;
}

/* Row m of x as int16: xq = round_even(x * inv), xs = absmax / 32767. A row holding inf or NaN
 * gets bad = 1 (its outputs become NaN, as a float product would). */
static void quantize_x(const float* x, int64_t ldx, int64_t M, int64_t I, int16_t* xq, float* xs,
                       int* bad) {
    for (int64_t m = 0; m < M; m++) {
        const float* r = x + m * ldx;
        float amax = 0.0f, zero = 0.0f;
        for (int64_t i = 0; i < I; i++) {
            float a = r[i] < 0.0f ? -r[i] : r[i];
            amax = a > amax ? a : amax;
            zero += r[i] * 0.0f; /* NaN when any value is inf or NaN */
        }
        bad[m] = !(zero == 0.0f);
        xs[m] = amax / XQ_LEVELS;
        const float inv = amax > 0.0f && !bad[m] ? XQ_LEVELS / amax : 0.0f;
        for (int64_t i = 0; i < I; i++) {
            float v = round_even(r[i] * inv);
            v = v > XQ_LEVELS ? XQ_LEVELS : (v < -XQ_LEVELS ? -XQ_LEVELS : v);
            xq[m * I + i] = (int16_t)v;
        }
    }
}

static inline int64_t sum_lanes(const int32_t* lanes, int n) {
    int64_t s = 0;
    for (int k = 0; k < n; k++) s += lanes[k];
    return s;
}

/* S[m] = sum_i q[i] * xq[m, i] over one weight row, exact, for MB rows of x (u: the VNNI bytes). */
ALWAYS_INLINE void q8_row(const int8_t* q, const int16_t* xq, const uint8_t* xhi, const uint8_t* xlo,
                          int64_t I, const int MB, int64_t* S) {
    (void)xq; (void)xhi; (void)xlo; /* each path reads the x representation it multiplies */
    for (int m = 0; m < MB; m++) S[m] = 0;
    for (int64_t c0 = 0; c0 < I; c0 += Q8_CHUNK) {
        const int64_t c1 = I - c0 < Q8_CHUNK ? I : c0 + Q8_CHUNK;
        int64_t i = c0;
#if Q8_VNNI
        __m512i hi[MB], lo[MB];
        for (int m = 0; m < MB; m++) hi[m] = lo[m] = _mm512_setzero_si512();
        for (; i + 64 <= c1; i += 64) {
            const __m512i w = _mm512_loadu_si512((const void*)(q + i));
            for (int m = 0; m < MB; m++) {
                hi[m] = _mm512_dpbusd_epi32(hi[m], _mm512_loadu_si512((const void*)(xhi + m * I + i)), w);
                lo[m] = _mm512_dpbusd_epi32(lo[m], _mm512_loadu_si512((const void*)(xlo + m * I + i)), w);
            }
        }
        for (int m = 0; m < MB; m++) {
            int32_t h[16], l[16];
            _mm512_storeu_si512((void*)h, hi[m]);
            _mm512_storeu_si512((void*)l, lo[m]);
            S[m] += 256 * sum_lanes(h, 16) + sum_lanes(l, 16);
        }
        for (; i < c1; i++)
            for (int m = 0; m < MB; m++) S[m] += (int32_t)q[i] * (256 * xhi[m * I + i] + xlo[m * I + i]);
#elif defined(__AVX512BW__)
        __m512i acc[MB];
        for (int m = 0; m < MB; m++) acc[m] = _mm512_setzero_si512();
        for (; i + 32 <= c1; i += 32) {
            const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)(q + i)));
            for (int m = 0; m < MB; m++)
                acc[m] = _mm512_add_epi32(acc[m], _mm512_madd_epi16(w, _mm512_loadu_si512((const void*)(xq + m * I + i))));
        }
        for (int m = 0; m < MB; m++) {
            int32_t lanes[16];
            _mm512_storeu_si512((void*)lanes, acc[m]);
            S[m] += sum_lanes(lanes, 16);
        }
#elif defined(__AVX2__)
        __m256i acc[MB];
        for (int m = 0; m < MB; m++) acc[m] = _mm256_setzero_si256();
        for (; i + 16 <= c1; i += 16) {
            const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(q + i)));
            for (int m = 0; m < MB; m++)
                acc[m] = _mm256_add_epi32(acc[m], _mm256_madd_epi16(w, _mm256_loadu_si256((const __m256i*)(xq + m * I + i))));
        }
        for (int m = 0; m < MB; m++) {
            int32_t lanes[8];
            _mm256_storeu_si256((__m256i*)lanes, acc[m]);
            S[m] += sum_lanes(lanes, 8);
        }
#endif
#if !Q8_VNNI
        for (; i < c1; i++)
            for (int m = 0; m < MB; m++) S[m] += (int32_t)q[i] * (int32_t)xq[m * I + i];
#endif
    }
}

static void q8_rows(const int8_t* q, const int16_t* xq, const uint8_t* xhi, const uint8_t* xlo, int64_t I,
                    int64_t mb, int64_t* S) {
    switch (mb) { /* a constant MB per case: the accumulators stay in registers */
        case 1: q8_row(q, xq, xhi, xlo, I, 1, S); break;
        case 2: q8_row(q, xq, xhi, xlo, I, 2, S); break;
        case 3: q8_row(q, xq, xhi, xlo, I, 3, S); break;
        case 4: q8_row(q, xq, xhi, xlo, I, 4, S); break;
        case 5: q8_row(q, xq, xhi, xlo, I, 5, S); break;
        case 6: q8_row(q, xq, xhi, xlo, I, 6, S); break;
        case 7: q8_row(q, xq, xhi, xlo, I, 7, S); break;
        default: q8_row(q, xq, xhi, xlo, I, 8, S); break;
    }
}

/* Batch 1: Q8_GROUP weight rows at a time against the one x row. A single row's sum is a chain of
 * dependent multiply-adds (each waits for the last, about 5 cycles), and its horizontal sum and
 * epilogue come every few hundred bytes: with one row per pass a core reads its weights at a third
 * of the memory's speed. Four rows keep eight independent chains in flight and share the loads of
 * x. Integer sums do not depend on their order, so the results are the same bits as q8_row's. */
#if Q8_VNNI
#define Q8_GROUP 4
ALWAYS_INLINE void q8_group1(const int8_t* q, const int16_t* xq, const uint8_t* xhi, const uint8_t* xlo,
                             int64_t I, int64_t* S) {
    if (I % 64 != 0) { /* rows that end off a 64-byte step: one at a time */
        for (int r = 0; r < Q8_GROUP; r++) q8_row(q + r * I, xq, xhi, xlo, I, 1, S + r);
        return;
    }
    for (int r = 0; r < Q8_GROUP; r++) S[r] = 0;
    for (int64_t c0 = 0; c0 < I; c0 += Q8_CHUNK) {
        const int64_t c1 = I - c0 < Q8_CHUNK ? I : c0 + Q8_CHUNK;
        __m512i hi[Q8_GROUP], lo[Q8_GROUP];
        for (int r = 0; r < Q8_GROUP; r++) hi[r] = lo[r] = _mm512_setzero_si512();
        for (int64_t i = c0; i < c1; i += 64) {
            const __m512i h = _mm512_loadu_si512((const void*)(xhi + i)), l = _mm512_loadu_si512((const void*)(xlo + i));
            for (int r = 0; r < Q8_GROUP; r++) {
                const __m512i w = _mm512_loadu_si512((const void*)(q + r * I + i));
                hi[r] = _mm512_dpbusd_epi32(hi[r], h, w);
                lo[r] = _mm512_dpbusd_epi32(lo[r], l, w);
            }
        }
        for (int r = 0; r < Q8_GROUP; r++) /* 16 lanes of at most 2^22 each: int32 holds their sum */
            S[r] += 256 * (int64_t)_mm512_reduce_add_epi32(hi[r]) + _mm512_reduce_add_epi32(lo[r]);
    }
}
#else
#define Q8_GROUP 1 /* the other paths: one row per pass, as q8_row */
ALWAYS_INLINE void q8_group1(const int8_t* q, const int16_t* xq, const uint8_t* xhi, const uint8_t* xlo,
                             int64_t I, int64_t* S) {
    q8_row(q, xq, xhi, xlo, I, 1, S);
}
#endif

/* x: (M, I) rows ldx apart, M <= 8; q: (O, I) int8; scale: (O,); rowsum: (O,) sum of each q row
 * (read by the VNNI path only); bias: (O,) or NULL; y: (M, O). Returns 0, -1 when M is out of
 * range, -2 when scratch memory cannot be had. */
int gf_q8_linear(const float* x, int64_t ldx, const int8_t* q, const float* scale, const int32_t* rowsum,
                 const float* bias, float* y, int64_t M, int64_t I, int64_t O) {
    if (M < 1 || M > QMAX_ROWS) return -1;
    int16_t* xq = malloc((size_t)(M * I) * (sizeof(int16_t) + 2));
    if (!xq) return -2;
    uint8_t* xhi = (uint8_t*)(xq + M * I);
    uint8_t* xlo = xhi + M * I;
    float xs[QMAX_ROWS];
    int bad[QMAX_ROWS];
    quantize_x(x, ldx, M, I, xq, xs, bad);
    for (int64_t k = 0; Q8_VNNI && k < M * I; k++) { /* xq + 32768 as two unsigned bytes */
        const uint16_t u = (uint16_t)(xq[k] + 32768);
        xhi[k] = (uint8_t)(u >> 8);
        xlo[k] = (uint8_t)(u & 255);
    }
    const int64_t group = M == 1 ? Q8_GROUP : 1, groups = (O + group - 1) / group;
#pragma omp parallel for schedule(static) if (O * I >= PAR_MIN)
    for (int64_t g = 0; g < groups; g++) {
        const int64_t o0 = g * group, n = O - o0 < group ? O - o0 : group;
        int64_t S[QMAX_ROWS * Q8_GROUP];
        if (M == 1 && n == Q8_GROUP) /* batch 1, a full group (one row where Q8_GROUP is 1) */
            q8_group1(q + o0 * I, xq, xhi, xlo, I, S);
        else
            for (int64_t r = 0; r < n; r++) q8_rows(q + (o0 + r) * I, xq, xhi, xlo, I, M, S + r * M);
        for (int64_t r = 0; r < n; r++) {
            const int64_t o = o0 + r;
            for (int64_t m = 0; m < M; m++) {
                const int64_t s = Q8_VNNI ? S[r * M + m] - 32768 * (int64_t)rowsum[o] : S[r * M + m];
                const float v = (float)s * (xs[m] * scale[o]);
                y[m * O + o] = bad[m] ? __builtin_nanf("") : (bias ? v + bias[o] : v);
            }
        }
    }
    free(xq);
    return 0;
}

/* 32 weights from 16 packed bytes: wa = the high nibbles (even elements), wb = the low ones (odd),
 * each looked up in the block's 16-entry table t. */
ALWAYS_INLINE void q4_decode32(const uint8_t* p, v16 t, v16* wa, v16* wb) {
#if defined(__AVX512F__)
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p));
    *wa = (v16)_mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), (__m512)t);
    *wb = (v16)_mm512_permutexvar_ps(b, (__m512)t); /* reads bits 0-3 of the index: the low nibble */
#elif defined(__AVX2__)
    union { v16 whole; __m256 half[2]; } tab = {t}, a, c;
    for (int h = 0; h < 2; h++) {
        /* the permutes read only bits 0-2 of an index, so the byte itself indexes its low nibble;
         * bit 3 of the code, shifted to the sign bit, picks entries 0-7 or 8-15 */
        const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8 * h)));
        const __m256i ia = _mm256_srli_epi32(b, 4);
        a.half[h] = _mm256_blendv_ps(_mm256_permutevar8x32_ps(tab.half[0], ia), _mm256_permutevar8x32_ps(tab.half[1], ia),
                                     _mm256_castsi256_ps(_mm256_slli_epi32(b, 24)));
        c.half[h] = _mm256_blendv_ps(_mm256_permutevar8x32_ps(tab.half[0], b), _mm256_permutevar8x32_ps(tab.half[1], b),
                                     _mm256_castsi256_ps(_mm256_slli_epi32(b, 28)));
    }
    *wa = a.whole;
    *wb = c.whole;
#else
    for (int k = 0; k < 16; k++) {
        (*wa)[k] = t[p[k] >> 4];
        (*wb)[k] = t[p[k] & 15];
    }
#endif
}

/* The 16 lanes summed in a fixed tree (halves, quarters, ...): the same on every path. Plain lane
 * arithmetic (no __builtin_shufflevector, which gcc has only from version 12). */
static inline float hsum16(v16 v) {
    float s8[8], s4[4];
    for (int k = 0; k < 8; k++) s8[k] = v[k] + v[k + 8];
    for (int k = 0; k < 4; k++) s4[k] = s8[k] + s8[k + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* One weight row (I / 2 bytes, I / 64 scales) against MB rows of the reordered x. */
ALWAYS_INLINE void q4_row(const uint8_t* p, const float* bs, const float* code, const float* xd, int64_t I,
                          const int MB, float* out) {
    v16 a[MB], b[MB];
    for (int m = 0; m < MB; m++) a[m] = b[m] = (v16){0};
    const v16 code16 = ld16(code);
    for (int64_t blk = 0; blk < I / Q4_BLOCK; blk++) {
        const v16 t = code16 * bs[blk]; /* the block's dequantized values, as dequantize_4bit's */
        for (int h = 0; h < 2; h++) {
            v16 wa, wb;
            q4_decode32(p + blk * 32 + h * 16, t, &wa, &wb);
            const int64_t i = blk * Q4_BLOCK + h * 32;
            for (int m = 0; m < MB; m++) {
                a[m] += wa * ld16(xd + m * I + i);
                b[m] += wb * ld16(xd + m * I + i + 16);
            }
        }
    }
    for (int m = 0; m < MB; m++) out[m] = hsum16(a[m] + b[m]);
}

/* Batch 1: Q4_GROUP weight rows at a time against the one x row, for the reason q8_group1 gives
 * (one row's two sums are chains of dependent float adds). Each row's sums take the same terms
 * in the same order as q4_row's, so the results are the same bits. */
#if defined(__AVX512F__)
#define Q4_GROUP 4
#else
#define Q4_GROUP 1
#endif
ALWAYS_INLINE void q4_group1(const uint8_t* p, const float* bs, const float* code, const float* xd, int64_t I,
                             float* out) {
    v16 a[Q4_GROUP], b[Q4_GROUP];
    for (int r = 0; r < Q4_GROUP; r++) a[r] = b[r] = (v16){0};
    const v16 code16 = ld16(code);
    const int64_t nb = I / Q4_BLOCK;
    for (int64_t blk = 0; blk < nb; blk++) {
        for (int h = 0; h < 2; h++) {
            const int64_t i = blk * Q4_BLOCK + h * 32;
            const v16 xa = ld16(xd + i), xb = ld16(xd + i + 16);
            for (int r = 0; r < Q4_GROUP; r++) {
                v16 wa, wb;
                q4_decode32(p + r * (I / 2) + blk * 32 + h * 16, code16 * bs[r * nb + blk], &wa, &wb);
                a[r] += wa * xa;
                b[r] += wb * xb;
            }
        }
    }
    for (int r = 0; r < Q4_GROUP; r++) out[r] = hsum16(a[r] + b[r]);
}

/* Rows of x per pass over a weight row: as many as the vector registers hold accumulators for
 * (each row's sums do not depend on the grouping, so the results do not either). */
#if defined(__AVX512F__)
#define Q4_MB 4
#else
#define Q4_MB 2
#endif

static void q4_rows(const uint8_t* p, const float* bs, const float* code, const float* xd, int64_t I, int64_t M,
                    float* out) {
    for (int64_t m0 = 0; m0 < M; m0 += Q4_MB) {
        const int64_t mb = M - m0 < Q4_MB ? M - m0 : Q4_MB;
        const float* xm = xd + m0 * I;
        if (mb == 1) q4_row(p, bs, code, xm, I, 1, out + m0);
#if Q4_MB == 4
        else if (mb == 2) q4_row(p, bs, code, xm, I, 2, out + m0);
        else if (mb == 3) q4_row(p, bs, code, xm, I, 3, out + m0);
        else q4_row(p, bs, code, xm, I, 4, out + m0);
#else
        else q4_row(p, bs, code, xm, I, 2, out + m0);
#endif
    }
}

/* x: (M, I) rows ldx apart, M <= 8, I % 64 == 0; packed: (O * I / 2,) bytes; block_scale:
 * (O * I / 64,); code: the 16 code values; bias: (O,) or NULL; y: (M, O). Returns 0, -1 for a bad
 * M or I, -2 when scratch memory cannot be had. */
int gf_q4_linear(const float* x, int64_t ldx, const uint8_t* packed, const float* block_scale, const float* code,
                 const float* bias, float* y, int64_t M, int64_t I, int64_t O) {
    if (M < 1 || M > QMAX_ROWS || I % Q4_BLOCK != 0) return -1;
    float* xd = malloc((size_t)(M * I) * sizeof(float));
    if (!xd) return -2;
    for (int64_t m = 0; m < M; m++) /* per 32 inputs: the even ones, then the odd ones */
        for (int64_t i = 0; i < I; i++) xd[m * I + (i & ~(int64_t)31) + (i & 1) * 16 + ((i & 31) >> 1)] = x[m * ldx + i];
    const int64_t group = M == 1 ? Q4_GROUP : 1, groups = (O + group - 1) / group;
#pragma omp parallel for schedule(static) if (O * I >= PAR_MIN)
    for (int64_t g = 0; g < groups; g++) {
        const int64_t o0 = g * group, n = O - o0 < group ? O - o0 : group;
        float out[QMAX_ROWS * Q4_GROUP];
        if (M == 1 && n == Q4_GROUP) /* batch 1, a full group (one row where Q4_GROUP is 1) */
            q4_group1(packed + o0 * (I / 2), block_scale + o0 * (I / Q4_BLOCK), code, xd, I, out);
        else
            for (int64_t r = 0; r < n; r++)
                q4_rows(packed + (o0 + r) * (I / 2), block_scale + (o0 + r) * (I / Q4_BLOCK), code, xd, I, M, out + r * M);
        for (int64_t r = 0; r < n; r++)
            for (int64_t m = 0; m < M; m++) y[m * O + o0 + r] = bias ? out[r * M + m] + bias[o0 + r] : out[r * M + m];
    }
    free(xd);
    return 0;
}
