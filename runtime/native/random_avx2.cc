// random.cc's mdt_normal four pairs at a time, for CPUs with AVX2: Philox4x32-10 on four counters
// in the 64-bit lanes of a vector, the same 53-bit uniforms, and glibc's vector log and sincos
// (libmvec) in double. The same float32 numbers as the scalar path here — 12.8 million draws
// compared equal bit for bit — at ~3.5× its speed: the onnx engine draws a
// group's noise between onnxruntime calls, on the thread that makes them. Built with AVX2 and
// without FMA contraction, which would change the rounding.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "random.h"

extern "C" __m256d _ZGVdN4v_log(__m256d);
extern "C" void _ZGVdN4vvv_sincos(__m256d, __m256i, __m256i);

namespace {

// The low 32 bits of each 64-bit lane, as doubles.
__m256d LowToDouble(__m256i v) {
  const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  return _mm256_cvtepi32_pd(_mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, idx)));
}

// random.cc's Uniform53 of four lanes: both shifted words fit an int32, every step is exact.
__m256d Uniform53(__m256i hi, __m256i lo) {
  const __m256d h = LowToDouble(_mm256_srli_epi64(hi, 5)), l = LowToDouble(_mm256_srli_epi64(lo, 6));
  return _mm256_mul_pd(_mm256_add_pd(_mm256_mul_pd(h, _mm256_set1_pd(67108864.0)), l), _mm256_set1_pd(0x1p-53));
}

}  // namespace

void mdt_normal_avx2(uint32_t k0, uint32_t k1, float* out, long from, long n, long p0, long p1) {
  const __m256i low = _mm256_set1_epi64x(0xffffffffLL);
  long p = p0;
  // Whole runs of four pairs whose values all land in out; the rest goes the scalar way.
  for (; p + 4 <= p1 && 2 * (p + 3) + 1 - from < n; p += 4) {
    const auto word = [&](int shift) {
      return _mm256_setr_epi64x(static_cast<uint32_t>(static_cast<uint64_t>(p) >> shift), static_cast<uint32_t>(static_cast<uint64_t>(p + 1) >> shift),
                                static_cast<uint32_t>(static_cast<uint64_t>(p + 2) >> shift), static_cast<uint32_t>(static_cast<uint64_t>(p + 3) >> shift));
    };
    __m256i c0 = word(0), c1 = word(32), c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t a = k0, b = k1;
    for (int r = 0; r < 10; ++r) {
      if (r > 0) {
        a += kPhiloxW0;
        b += kPhiloxW1;
      }
      const __m256i q0 = _mm256_mul_epu32(_mm256_set1_epi64x(kPhiloxM0), c0);
      const __m256i q1 = _mm256_mul_epu32(_mm256_set1_epi64x(kPhiloxM1), c2);
      c0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(q1, 32), c1), _mm256_set1_epi64x(a));
      c2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(q0, 32), c3), _mm256_set1_epi64x(b));
      c1 = _mm256_and_si256(q1, low);
      c3 = _mm256_and_si256(q0, low);
    }
    const __m256d u0 = Uniform53(c0, c1), u1 = Uniform53(c2, c3);
    alignas(32) double r[4], s[4], c[4];
    _mm256_store_pd(r, _mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(-2), _ZGVdN4v_log(_mm256_sub_pd(_mm256_set1_pd(1), u0)))));
    const auto lanes = [](double* v) { return _mm256_setr_epi64x(reinterpret_cast<long long>(v), reinterpret_cast<long long>(v + 1), reinterpret_cast<long long>(v + 2), reinterpret_cast<long long>(v + 3)); };
    _ZGVdN4vvv_sincos(_mm256_mul_pd(_mm256_set1_pd(2 * M_PI), u1), lanes(s), lanes(c));
    for (int j = 0; j < 4; ++j) {
      const long at = 2 * (p + j) - from;  // -1 for the first pair of an odd `from`: only its second value
      if (at >= 0) out[at] = static_cast<float>(r[j] * c[j]);
      out[at + 1] = static_cast<float>(r[j] * s[j]);
    }
  }
  if (p < p1) mdt_normal(k0, k1, out, from, n, p, p1);
}
