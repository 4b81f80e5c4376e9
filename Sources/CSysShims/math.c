// Elementwise kernels written so the compiler vectorises them (no libm calls, no branches in the loops): the
// transformer's GELU and softmax spent most of their time in scalar expf.
#include <stdint.h>
#include <string.h>
#include "CSysShims.h"

/// e^x for x in [-87, 88] (clamped), ~2 ulp: Cody–Waite reduction x = k·ln2 + r, Cephes' polynomial for e^r,
/// 2^k built in the exponent bits. Rounding by the 1.5·2^23 trick, so every step is plain float arithmetic.
static inline float exp_approx(float in) {
    float x = in > -87.0f ? in : -87.0f;   // (NaN → −87 here, so the conversion below is defined; NaN is returned)
    x = x < 88.0f ? x : 88.0f;
    float kf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)kf + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return in == in ? e * scale : in;
}

// Compiled twice — AVX2 (8 lanes) and the x86-64 baseline (SSE, 4 lanes) — and picked at load time. Not FMA: the
// same IEEE operations lane by lane either way, so every machine computes the same bits.
// (Not under ThreadSanitizer: its instrumentation of the load-time resolver crashes before the runtime starts.)
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CSYS_NO_CLONES 1
#endif
#endif
#if defined(__x86_64__) && defined(__clang__) && !defined(CSYS_NO_CLONES)
#define CSYS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CSYS_CLONES
#endif

CSYS_CLONES
void csys_gelu(const float *x, float *y, long n) {
    for (long i = 0; i < n; i++) {
        float v = x[i];
        float a = (v < 0 ? -v : v) * 0.70710678118654752f;
        float t = 1.0f / (1.0f + 0.3275911f * a);
        float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
        float r = 1.0f - poly * exp_approx(-a * a);
        float erf = v < 0 ? -r : r;
        y[i] = 0.5f * v * (1.0f + erf);
    }
}

CSYS_CLONES
void csys_softmax_rows(const float *x, float *y, long rows, long cols) {
    for (long row = 0; row < rows; row++) {
        const float *xr = x + row * cols;
        float *yr = y + row * cols;
        float m = -3.402823466e38f;
        for (long j = 0; j < cols; j++) m = xr[j] > m ? xr[j] : m;
        for (long j = 0; j < cols; j++) yr[j] = exp_approx(xr[j] - m);   // (vectorised: no reduction inside)
        float s = 0;
        for (long j = 0; j < cols; j++) s += yr[j];
        float inv = 1.0f / s;
        for (long j = 0; j < cols; j++) yr[j] *= inv;
    }
}
