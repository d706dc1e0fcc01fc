// Built with -mavx2 -mfma -ffast-math: GCC vectorises these loops, expf included (glibc's
// libmvec), and reorders the row sums. Only called where the CPU has AVX2 and FMA.
#include "pointwise.h"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr float kA = 1.5957691216057308f;  // 2·sqrt(2/π)
constexpr float kB = kA * 0.044715f;

// Clamped: under -ffast-math an overflowing expf is not guaranteed to give inf (and 1/(1 + inf)
// to give 0); σ(±40) is already 0 or 1 in float32.
inline float Sigmoid(float v) {
  const float c = v < -40.0f ? -40.0f : (v > 40.0f ? 40.0f : v);
  return 1.0f / (1.0f + std::exp(-c));
}

}  // namespace

extern "C" {

void mdt_gelu(const float* x, float* y, long begin, long end) {
  for (long i = begin; i < end; ++i) {
    const float v = x[i];
    y[i] = v * Sigmoid(v * (kA + kB * v * v));
  }
}

void mdt_gelu_grad(const float* dy, const float* x, float* dx, long begin, long end) {
  for (long i = begin; i < end; ++i) {
    const float v = x[i];
    const float s = Sigmoid(v * (kA + kB * v * v));
    dx[i] = dy[i] * (s + v * s * (1.0f - s) * (kA + 3.0f * kB * v * v));
  }
}

void mdt_ln_modulate(const float* x, const float* shift, const float* scale, float eps, long l, long d, long g,
                     float* z, float* mean, float* rstd) {
  const float* sh = shift + g * d;
  const float* sc = scale + g * d;
  const float inv = 1.0f / static_cast<float>(d);
  for (long r = g * l; r < (g + 1) * l; ++r) {
    const float* xr = x + r * d;
    float* zr = z + r * d;
    float sum = 0.0f;
    for (long j = 0; j < d; ++j) sum += xr[j];
    const float mu = sum * inv;
    float sq = 0.0f;
    for (long j = 0; j < d; ++j) sq += (xr[j] - mu) * (xr[j] - mu);
    const float rho = 1.0f / std::sqrt(sq * inv + eps);
    for (long j = 0; j < d; ++j) zr[j] = (xr[j] - mu) * rho * (1.0f + sc[j]) + sh[j];
    mean[r] = mu;
    rstd[r] = rho;
  }
}

void mdt_ln_modulate_grad(const float* dz, const float* x, const float* mean, const float* rstd, const float* scale,
                          const float* residual, long l, long d, long g, float* dx, float* dshift, float* dscale) {
  const float* sc = scale + g * d;
  float* dsh = dshift + g * d;
  float* dsc = dscale + g * d;
  const float inv = 1.0f / static_cast<float>(d);
  for (long j = 0; j < d; ++j) dsh[j] = dsc[j] = 0.0f;
  for (long r = g * l; r < (g + 1) * l; ++r) {
    const float* xr = x + r * d;
    const float* dzr = dz + r * d;
    float* dxr = dx + r * d;
    const float mu = mean[r], rho = rstd[r];
    float su = 0.0f, sux = 0.0f;
    for (long j = 0; j < d; ++j) {
      const float xh = (xr[j] - mu) * rho;
      const float u = dzr[j] * (1.0f + sc[j]);
      su += u;
      sux += u * xh;
      dsh[j] += dzr[j];
      dsc[j] += dzr[j] * xh;
    }
    const float mu_u = su * inv, mu_ux = sux * inv;
    for (long j = 0; j < d; ++j) {
      const float xh = (xr[j] - mu) * rho;
      dxr[j] = rho * (dzr[j] * (1.0f + sc[j]) - mu_u - xh * mu_ux);
    }
    if (residual != nullptr) {
      const float* rr = residual + r * d;
      for (long j = 0; j < d; ++j) dxr[j] += rr[j];
    }
  }
}

void mdt_softmax_bias(const float* x, const float* bias, long l, long heads, long bias_batches, float* p, long g0, long g1) {
  const long ll = l * l;
  for (long g = g0; g < g1; ++g) {
    const float* b = bias == nullptr ? nullptr : bias + ((bias_batches == 1 ? 0 : g / heads) * heads + g % heads) * ll;
    for (long i = 0; i < l; ++i) {
      const float* xr = x + g * ll + i * l;
      const float* br = b == nullptr ? nullptr : b + i * l;
      float* pr = p + g * ll + i * l;
      float mx = -3.4e38f;  // not -INFINITY: -ffast-math assumes no infinities
      if (br == nullptr) {
        for (long j = 0; j < l; ++j) pr[j] = xr[j];
      } else {
        for (long j = 0; j < l; ++j) pr[j] = xr[j] + br[j];
      }
      for (long j = 0; j < l; ++j) mx = pr[j] > mx ? pr[j] : mx;
      float sum = 0.0f;
      for (long j = 0; j < l; ++j) {
        pr[j] = std::exp(pr[j] - mx);
        sum += pr[j];
      }
      const float inv = 1.0f / sum;
      for (long j = 0; j < l; ++j) pr[j] *= inv;
    }
  }
}

void mdt_softmax_grad(const float* p, const float* dp, long l, float* dx, long begin, long end) {
  for (long r = begin; r < end; ++r) {
    const float* pr = p + r * l;
    const float* dr = dp + r * l;
    float* xr = dx + r * l;
    float dot = 0.0f;
    for (long j = 0; j < l; ++j) dot += pr[j] * dr[j];
    for (long j = 0; j < l; ++j) xr[j] = pr[j] * (dr[j] - dot);
  }
}

void mdt_sum_middle(const float* x, long reduced, long inner, long o, long i0, long i1, float* out) {
  float* dst = out + o * inner;
  const float* src = x + o * reduced * inner;
  for (long i = i0; i < i1; ++i) dst[i] = src[i];
  for (long r = 1; r < reduced; ++r)
    for (long i = i0; i < i1; ++i) dst[i] += src[r * inner + i];
}

void mdt_adamw(const float* p, const float* g, const float* m, const float* v, const double* h, float* p1, float* m1, float* v1,
               long begin, long end) {
  const float lr = h[0], b1 = h[1], b2 = h[2], eps = h[3], wd = h[4], bc1 = h[5], bc2s = h[6];
  const float decay = 1.0f - lr * wd, step = lr / bc1;
  for (long i = begin; i < end; ++i) {
    const float mi = b1 * m[i] + (1.0f - b1) * g[i];
    const float vi = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    m1[i] = mi;
    v1[i] = vi;
    p1[i] = p[i] * decay - step * mi / (std::sqrt(vi) / bc2s + eps);
  }
}

void mdt_adan(const float* p, const float* g, const float* m, const float* n, const float* diff, const float* neg, const double* h,
              float* p1, float* m1, float* n1, float* d1, float* neg1, long begin, long end) {
  const float lr = h[0], b1 = h[1], b2 = h[2], b3 = h[3], eps = h[4], wd = h[5], bc1 = h[6], bc2 = h[7], bc3s = h[8], clip = h[9];
  const bool first = h[10] != 0.0;
  const float stepM = lr / bc1, stepD = lr * b2 / bc2, shrink = 1.0f / (1.0f + lr * wd);
  for (long i = begin; i < end; ++i) {
    const float gi = g[i] * clip;
    const float gd = first ? 0.0f : neg[i] + gi;
    const float mi = m[i] * b1 + gi * (1.0f - b1);
    const float di = diff[i] * b2 + gd * (1.0f - b2);
    const float u = gd * b2 + gi;
    const float ni = n[i] * b3 + u * u * (1.0f - b3);
    const float denom = std::sqrt(ni) / bc3s + eps;
    const float pi = p[i] - stepM * mi / denom - stepD * di / denom;
    p1[i] = wd != 0.0f ? pi * shrink : pi;
    m1[i] = mi;
    n1[i] = ni;
    d1[i] = di;
    neg1[i] = -gi;
  }
}

void mdt_ema(const float* e, const float* p, float decay, float* out, long begin, long end) {
  for (long i = begin; i < end; ++i) out[i] = e[i] * decay + p[i] * (1.0f - decay);
}

long mdt_count_non_finite(const float* x, long n) {
  long bad = 0;
  for (long i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    bad += (bits & 0x7f800000u) == 0x7f800000u;
  }
  return bad;
}

}  // extern "C"
