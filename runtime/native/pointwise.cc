// Built with -mavx2 -mfma -ffast-math: GCC vectorises these loops, expf included (glibc's
// libmvec), and reorders the row sums. Only called where the CPU has AVX2 and FMA.
#include "pointwise.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>

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

// p[0, l) = softmax(p[0, l)).
static void SoftmaxInPlace(float* p, long l) {
  float mx = -3.4e38f;  // not -INFINITY: -ffast-math assumes no infinities
  for (long j = 0; j < l; ++j) mx = p[j] > mx ? p[j] : mx;
  float sum = 0.0f;
  for (long j = 0; j < l; ++j) {
    p[j] = std::exp(p[j] - mx);
    sum += p[j];
  }
  const float inv = 1.0f / sum;
  for (long j = 0; j < l; ++j) p[j] *= inv;
}

void mdt_softmax_bias(const float* x, const float* bias, long l, long heads, long bias_batches, float* p, long g0, long g1) {
  const long ll = l * l;
  for (long g = g0; g < g1; ++g) {
    const float* b = bias == nullptr ? nullptr : bias + ((bias_batches == 1 ? 0 : g / heads) * heads + g % heads) * ll;
    for (long i = 0; i < l; ++i) {
      const float* xr = x + g * ll + i * l;
      const float* br = b == nullptr ? nullptr : b + i * l;
      float* pr = p + g * ll + i * l;
      if (br == nullptr) {
        for (long j = 0; j < l; ++j) pr[j] = xr[j];
      } else {
        for (long j = 0; j < l; ++j) pr[j] = xr[j] + br[j];
      }
      SoftmaxInPlace(pr, l);
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

namespace {

// Register tiles of the attention products, in AVX2 intrinsics (GCC's own vectorisation of
// these loops shuffles and spills): TR rows at a time against 16 (scores) or 8 (values)
// contiguous columns, the accumulators in registers.
constexpr long TR = 4;

// s (TR rows, all l columns, row stride l) += q · kᵀ; q (TR, hd) contiguous (already scaled),
// kt (hd, l). Columns past the last whole 16 one at a time.
void ScoresTile(const float* q, const float* kt, long l, long hd, float* s) {
  long j0 = 0;
  for (; j0 + 16 <= l; j0 += 16) {
    __m256 a[TR][2];
    for (long r = 0; r < TR; ++r) {
      a[r][0] = _mm256_loadu_ps(s + r * l + j0);
      a[r][1] = _mm256_loadu_ps(s + r * l + j0 + 8);
    }
    for (long e = 0; e < hd; ++e) {
      const __m256 k0 = _mm256_loadu_ps(kt + e * l + j0), k1 = _mm256_loadu_ps(kt + e * l + j0 + 8);
      for (long r = 0; r < TR; ++r) {
        const __m256 qv = _mm256_broadcast_ss(q + r * hd + e);
        a[r][0] = _mm256_fmadd_ps(qv, k0, a[r][0]);
        a[r][1] = _mm256_fmadd_ps(qv, k1, a[r][1]);
      }
    }
    for (long r = 0; r < TR; ++r) {
      _mm256_storeu_ps(s + r * l + j0, a[r][0]);
      _mm256_storeu_ps(s + r * l + j0 + 8, a[r][1]);
    }
  }
  for (; j0 < l; ++j0)
    for (long r = 0; r < TR; ++r) {
      float acc = s[r * l + j0];
      for (long e = 0; e < hd; ++e) acc += q[r * hd + e] * kt[e * l + j0];
      s[r * l + j0] = acc;
    }
}

// o (TR rows at stride `ostride`, hd columns) = p (TR rows of l, stride l) · vs (l, hd).
void ValuesTile(const float* p, const float* vs, long l, long hd, float* o, long ostride) {
  long e0 = 0;
  for (; e0 + 8 <= hd; e0 += 8) {
    __m256 a[TR];
    for (long r = 0; r < TR; ++r) a[r] = _mm256_setzero_ps();
    for (long j = 0; j < l; ++j) {
      const __m256 v = _mm256_loadu_ps(vs + j * hd + e0);
      for (long r = 0; r < TR; ++r) a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + r * l + j), v, a[r]);
    }
    for (long r = 0; r < TR; ++r) _mm256_storeu_ps(o + r * ostride + e0, a[r]);
  }
  for (; e0 < hd; ++e0)
    for (long r = 0; r < TR; ++r) {
      float acc = 0.0f;
      for (long j = 0; j < l; ++j) acc += p[r * l + j] * vs[j * hd + e0];
      o[r * ostride + e0] = acc;
    }
}

}  // namespace

long mdt_attention_scratch(long l, long hd) { return 2 * l * hd + ((l + TR - 1) / TR * TR) * l + 2 * TR * hd; }

void mdt_attention(const float* qkv, const float* bias, long l, long heads, long hd, long bias_batches, float scale, float* out,
                   long g0, long g1, float* scratch) {
  const long d = heads * hd, row = 3 * d;
  const long lp = (l + TR - 1) / TR * TR;  // rows padded to whole tiles
  float* kt = scratch;                     // (hd, l): a logit row is a sum of contiguous rows of it
  float* vs = kt + hd * l;                 // (l, hd)
  float* s = vs + l * hd;                  // (lp, l) logits, then probabilities
  float* qpad = s + lp * l;                // (TR, hd): a tile's q rows
  float* opad = qpad + TR * hd;            // (TR, hd): its output rows
  for (long g = g0; g < g1; ++g) {
    const long b = g / heads, h = g % heads;
    const float* base = qkv + b * l * row + h * hd;
    for (long j = 0; j < l; ++j) {
      const float* k = base + j * row + d;
      const float* v = base + j * row + 2 * d;
      for (long e = 0; e < hd; ++e) kt[e * l + j] = k[e];
      for (long e = 0; e < hd; ++e) vs[j * hd + e] = v[e];
    }
    const float* bg = bias == nullptr ? nullptr : bias + ((bias_batches == 1 ? 0 : b) * heads + h) * l * l;
    for (long i = 0; i < lp * l; ++i) s[i] = 0.0f;
    if (bg != nullptr)
      for (long i = 0; i < l * l; ++i) s[i] = bg[i];
    for (long i0 = 0; i0 < lp; i0 += TR) {
      // The tile's q rows, scaled, contiguous (zero past the last row).
      for (long r = 0; r < TR; ++r)
        for (long e = 0; e < hd; ++e) qpad[r * hd + e] = i0 + r < l ? base[(i0 + r) * row + e] * scale : 0.0f;
      ScoresTile(qpad, kt, l, hd, s + i0 * l);
    }
    for (long i = 0; i < lp; ++i) SoftmaxInPlace(s + i * l, l);
    float* o = out + b * l * d + h * hd;
    for (long i0 = 0; i0 < lp; i0 += TR) {
      if (i0 + TR <= l) {
        ValuesTile(s + i0 * l, vs, l, hd, o + i0 * d, d);
      } else {
        ValuesTile(s + i0 * l, vs, l, hd, opad, hd);
        for (long r = 0; i0 + r < l; ++r)
          for (long e = 0; e < hd; ++e) o[(i0 + r) * d + e] = opad[r * hd + e];
      }
    }
  }
}

}  // extern "C"

namespace {

template <typename F>
void BinaryRow(const float* a, long sa, const float* b, long sb, float* o, long n, F f) {
  if (sa == 1 && sb == 1) {
    for (long j = 0; j < n; ++j) o[j] = f(a[j], b[j]);
  } else if (sa == 0 && sb == 1) {
    const float x = a[0];
    for (long j = 0; j < n; ++j) o[j] = f(x, b[j]);
  } else if (sa == 1 && sb == 0) {
    const float y = b[0];
    for (long j = 0; j < n; ++j) o[j] = f(a[j], y);
  } else {
    for (long j = 0; j < n; ++j) o[j] = f(a[j * sa], b[j * sb]);
  }
}

}  // namespace

extern "C" {

void mdt_binary_row(int op, const float* a, long sa, const float* b, long sb, float* o, long n) {
  switch (op) {
    case 0: BinaryRow(a, sa, b, sb, o, n, [](float x, float y) { return x + y; }); break;
    case 1: BinaryRow(a, sa, b, sb, o, n, [](float x, float y) { return x - y; }); break;
    default: BinaryRow(a, sa, b, sb, o, n, [](float x, float y) { return x * y; }); break;
  }
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
