/* Small-batch linear layers for CPU decoding: y (M, O) = x (M, I) . W^T + b, for M of 1 to a few.
 *
 * Decoding reads every weight once per token and does one multiply-add with it, so the speed
 * limit is how fast the weights stream in from memory. This kernel reads them in one sequential
 * pass: W is stored "packed" as (ceil(O / 32), I, 32), i.e. 32 output rows interleaved so that
 * input feature i of those 32 rows is 128 contiguous bytes. A tile of 32 outputs is then one
 * linear stream that the hardware prefetcher follows perfectly; each weight is loaded once and
 * used for every row of x (up to 8 at a time), and there is no horizontal sum at the end.
 *
 * Written with GCC vector extensions rather than intrinsics so the compiler picks the widest
 * instructions the target has (-march=native by default, or the path build.py is told to use):
 * AVX-512, two AVX2 halves, or four SSE quarters. The summation order is fixed by the code, not
 * by the vector width and build.py turns off fused multiply-adds, so every path computes the
 * same float32 sums; gf_isa says which path a library is.
 * Threads: OpenMP over tiles; loaded after PyTorch, this shares PyTorch's OpenMP runtime, so
 * torch.set_num_threads governs it too.
 */
#define _GNU_SOURCE /* MADV_HUGEPAGE */
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif

#define TILE 32
typedef float v16 __attribute__((vector_size(64), aligned(4), may_alias));

static inline v16 load16(const float* p) { return *(const v16*)p; }
static inline void store16(float* p, v16 v) { *(v16*)p = v; }

/* One tile of 32 outputs for MB rows of x; U independent accumulator sets hide the FMA latency. */
#define DEFINE_TILE(MB, U)                                                                      \
    static inline void tile_##MB(const float* x, int64_t ldx, const float* pt, int64_t I,       \
                                 v16 out[2][8]) {                                               \
        v16 acc[U][2][MB];                                                                      \
        for (int u = 0; u < U; u++)                                                             \
            for (int m = 0; m < MB; m++) acc[u][0][m] = acc[u][1][m] = (v16){0};                \
        int64_t i = 0;                                                                          \
        for (; i + U <= I; i += U) {                                                            \
            for (int u = 0; u < U; u++) {                                                       \
                const float* q = pt + (i + u) * TILE;                                           \
                v16 w0 = load16(q), w1 = load16(q + 16);                                        \
                for (int m = 0; m < MB; m++) {                                                  \
                    float xv = x[m * ldx + i + u];                                              \
                    acc[u][0][m] += w0 * xv;                                                    \
                    acc[u][1][m] += w1 * xv;                                                    \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        for (; i < I; i++) {                                                                    \
            const float* q = pt + i * TILE;                                                     \
            v16 w0 = load16(q), w1 = load16(q + 16);                                            \
            for (int m = 0; m < MB; m++) {                                                      \
                float xv = x[m * ldx + i];                                                      \
                acc[0][0][m] += w0 * xv;                                                        \
                acc[0][1][m] += w1 * xv;                                                        \
            }                                                                                   \
        }                                                                                       \
        for (int m = 0; m < MB; m++) {                                                          \
            v16 s0 = acc[0][0][m], s1 = acc[0][1][m];                                           \
            for (int u = 1; u < U; u++) { s0 += acc[u][0][m]; s1 += acc[u][1][m]; }            \
            out[0][m] = s0;                                                                     \
            out[1][m] = s1;                                                                     \
        }                                                                                       \
    }

DEFINE_TILE(1, 4)
DEFINE_TILE(2, 2)
DEFINE_TILE(3, 2)
DEFINE_TILE(4, 2)
DEFINE_TILE(8, 1)

int gf_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Ask for 2 MiB pages over a buffer not yet touched: streaming 500 MB per token through 4 KiB
 * pages costs a TLB miss every 4 KiB, which measured 15-20% of the kernel's time. */
int gf_advise_huge(void* ptr, int64_t nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)1 << 21;
    uintptr_t start = ((uintptr_t)ptr + huge - 1) & ~(huge - 1);
    uintptr_t end = ((uintptr_t)ptr + (uintptr_t)nbytes) & ~(huge - 1);
    if (end <= start) return 0;
    return madvise((void*)start, end - start, MADV_HUGEPAGE);
#else
    (void)ptr; (void)nbytes;
    return 0;
#endif
}

/* x: (M, I) rows ldx apart; packed: (ceil(O/32), I, 32); bias: (O,) or NULL; y: (M, O) contiguous. */
void gf_linear(const float* x, int64_t ldx, const float* packed, const float* bias, float* y,
               int64_t M, int64_t I, int64_t O) {
    const int64_t tiles = (O + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) if (tiles > 1)
    for (int64_t t = 0; t < tiles; t++) {
        const float* pt = packed + t * I * TILE;
        const int64_t o0 = t * TILE;
        const int64_t width = O - o0 < TILE ? O - o0 : TILE;
        int64_t mb;
        for (int64_t m0 = 0; m0 < M; m0 += mb) {
            /* 8 rows at a time (16 accumulators), then what is left in blocks of up to 4. From
             * about 4 rows on, a core is busy multiplying rather than waiting for memory. */
            mb = M - m0 >= 8 ? 8 : (M - m0 < 4 ? M - m0 : 4);
            const float* xm = x + m0 * ldx;
            v16 out[2][8];
            switch (mb) {
                case 1: tile_1(xm, ldx, pt, I, out); break;
                case 2: tile_2(xm, ldx, pt, I, out); break;
                case 3: tile_3(xm, ldx, pt, I, out); break;
                case 4: tile_4(xm, ldx, pt, I, out); break;
                default: tile_8(xm, ldx, pt, I, out); break;
            }
            for (int64_t m = 0; m < mb; m++) {
                float* ym = y + (m0 + m) * O + o0;
                if (width == TILE) {
                    v16 r0 = out[0][m], r1 = out[1][m];
                    if (bias) { r0 += load16(bias + o0); r1 += load16(bias + o0 + 16); }
                    store16(ym, r0);
                    store16(ym + 16, r1);
                } else {
                    for (int64_t r = 0; r < width; r++) {
                        float v = r < 16 ? out[0][m][r] : out[1][m][r - 16];
                        ym[r] = v + (bias ? bias[o0 + r] : 0.0f);
                    }
                }
            }
        }
    }
}

/* The int8 twin, for scoring a vocabulary approximately: packed int8 weights (tiles, I, 32) with
 * one scale per output row; y = scale[o] * sum_i q[o, i] x[m, i]. Used to find the few rows that
 * can hold the largest logit (generate/greedy_head.py); those are then recomputed exactly. */
/* int8 -> float for 16 weights. GCC's generic vector conversion of int8 comes out as scalar
 * code, so the x86 cases spell out the sign-extend-then-convert instructions. */
static inline v16 load16_q8(const int8_t* p) {
#if defined(__AVX512F__)
    return (v16)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
#elif defined(__AVX2__)
    union { __m256 half[2]; v16 whole; } u;
    u.half[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
    u.half[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8))));
    return u.whole;
#else
    v16 out;
    for (int k = 0; k < 16; k++) out[k] = (float)p[k];
    return out;
#endif
}

void gf_linear_q8(const float* x, int64_t ldx, const int8_t* packed, const float* scale, float* y,
                  int64_t M, int64_t I, int64_t O) {
    const int64_t tiles = (O + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) if (tiles > 1)
    for (int64_t t = 0; t < tiles; t++) {
        const int8_t* pt = packed + t * I * TILE;
        const int64_t o0 = t * TILE;
        const int64_t width = O - o0 < TILE ? O - o0 : TILE;
        for (int64_t m = 0; m < M; m++) {
            const float* xm = x + m * ldx;
            v16 a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};
            int64_t i = 0;
            for (; i + 2 <= I; i += 2) {
                const int8_t* q = pt + i * TILE;
                a0 += load16_q8(q) * xm[i];
                a1 += load16_q8(q + 16) * xm[i];
                b0 += load16_q8(q + 32) * xm[i + 1];
                b1 += load16_q8(q + 48) * xm[i + 1];
            }
            for (; i < I; i++) {
                const int8_t* q = pt + i * TILE;
                a0 += load16_q8(q) * xm[i];
                a1 += load16_q8(q + 16) * xm[i];
            }
            a0 += b0;
            a1 += b1;
            float* ym = y + m * O + o0;
            for (int64_t r = 0; r < width; r++) ym[r] = scale[o0 + r] * (r < 16 ? a0[r] : a1[r - 16]);
        }
    }
}

/* The rows that can still hold the largest logit (generate/shortlist.py): with s = score + bias
 * and slack = hnorm * margin + xnorm * qnorm (xnorm = 0 when x was not quantized), keep o when
 * s[o] + slack[o] >= max over o' of s[o'] - slack[o']. Writes at most cap indices to out and
 * returns how many rows qualify (possibly more than cap). */
int64_t gf_shortlist(const float* score, const float* bias, const double* margin, double hnorm,
                     const double* qnorm, double xnorm, int64_t V, int64_t* out, int64_t cap) {
    double floor = -1.0 / 0.0;
    for (int64_t o = 0; o < V; o++) {
        double slack = hnorm * margin[o] + xnorm * qnorm[o];
        double lo = (double)score[o] + (bias ? (double)bias[o] : 0.0) - slack;
        if (lo > floor) floor = lo;
    }
    int64_t n = 0;
    for (int64_t o = 0; o < V; o++) {
        double slack = hnorm * margin[o] + xnorm * qnorm[o];
        double hi = (double)score[o] + (bias ? (double)bias[o] : 0.0) + slack;
        if (hi >= floor) {
            if (n < cap) out[n] = o;
            n++;
        }
    }
    return n;
}

/* int8 x int8 scores with the dot-product instruction (AVX-512 VNNI): 64 multiply-adds per
 * instruction, exact in int32, so the int8 head streams at memory speed instead of spending its
 * time widening int8 to float. x is quantized too (xq = q_x + 128, unsigned, as the instruction
 * wants), which adds its own bounded error (shortlist.py). Layout: (tiles, G, 32, 4) int8, G =
 * ceil(I / 4) groups of 4 inputs, 4 consecutive inputs of one output row in 4 consecutive bytes.
 * y[o] = scale[o] * xscale * (sum_i xq[i] q[o, i] - 128 * rowsum[o]). */
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define GF_VNNI 1
#else
#define GF_VNNI 0
#endif

int gf_has_vnni(void) { return GF_VNNI; }

/* The instruction-set path this library was compiled for, from the compiler's own macros (so
 * -march=native reports what it turned into); names as in build.py's ISAS. */
const char* gf_isa(void) {
#if GF_VNNI
    return "avx512_vnni";
#elif defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__)
    return "avx2";
#else
    return "generic";
#endif
}

void gf_linear_q8x8(const uint8_t* xq, const int8_t* packed4, const int32_t* rowsum, const float* scale,
                    float xscale, float* y, int64_t G, int64_t O) {
#if GF_VNNI
    const int64_t tiles = (O + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) if (tiles > 1)
    for (int64_t t = 0; t < tiles; t++) {
        const int8_t* pt = packed4 + t * G * TILE * 4;
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, b0 = a0, b1 = a0;
        int64_t g = 0;
        for (; g + 2 <= G; g += 2) {
            const __m512i xa = _mm512_set1_epi32(*(const int32_t*)(xq + 4 * g));
            const __m512i xb = _mm512_set1_epi32(*(const int32_t*)(xq + 4 * g + 4));
            const int8_t* q = pt + g * TILE * 4;
            a0 = _mm512_dpbusd_epi32(a0, xa, _mm512_loadu_si512((const void*)q));
            a1 = _mm512_dpbusd_epi32(a1, xa, _mm512_loadu_si512((const void*)(q + 64)));
            b0 = _mm512_dpbusd_epi32(b0, xb, _mm512_loadu_si512((const void*)(q + 128)));
            b1 = _mm512_dpbusd_epi32(b1, xb, _mm512_loadu_si512((const void*)(q + 192)));
        }
        for (; g < G; g++) {
            const __m512i xa = _mm512_set1_epi32(*(const int32_t*)(xq + 4 * g));
            const int8_t* q = pt + g * TILE * 4;
            a0 = _mm512_dpbusd_epi32(a0, xa, _mm512_loadu_si512((const void*)q));
            a1 = _mm512_dpbusd_epi32(a1, xa, _mm512_loadu_si512((const void*)(q + 64)));
        }
        int32_t acc[TILE];
        _mm512_storeu_si512((void*)acc, _mm512_add_epi32(a0, b0));
        _mm512_storeu_si512((void*)(acc + 16), _mm512_add_epi32(a1, b1));
        const int64_t o0 = t * TILE;
        const int64_t width = O - o0 < TILE ? O - o0 : TILE;
        for (int64_t r = 0; r < width; r++)
            y[o0 + r] = scale[o0 + r] * xscale * (float)(acc[r] - 128 * rowsum[o0 + r]);
    }
#else
    (void)xq; (void)packed4; (void)rowsum; (void)scale; (void)xscale; (void)y; (void)G; (void)O;
#endif
}
