// dsl/random.ts's normal() in C: Philox4x32-10 on the data stream's counters, 53-bit uniforms,
// Box–Muller in double. The same integer steps, and libm's log/cos/sin where JS has V8's (both
// within an ulp of exact, so the float32 results agree but for a rare last-bit rounding).
// Built without -ffast-math or FMA contraction, which would change the rounding.
#include <cmath>
#include <cstdint>

#include "random.h"

namespace {

void Philox(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c[2];
    const uint32_t c1 = c[1], c3 = c[3];
    c[0] = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    c[1] = static_cast<uint32_t>(p1);
    c[2] = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c[3] = static_cast<uint32_t>(p0);
  }
}

double Uniform53(uint32_t hi, uint32_t lo) {
  return (static_cast<double>(hi >> 5) * 67108864.0 + static_cast<double>(lo >> 6)) * 0x1p-53;
}

}  // namespace

void mdt_normal(uint32_t k0, uint32_t k1, float* out, long from, long n, long p0, long p1) {
  constexpr uint32_t kDomainData = 0;
  const double two_pi = 2 * M_PI;
  for (long p = p0; p < p1 && 2 * p - from < n; ++p) {
    uint32_t c[4] = {static_cast<uint32_t>(p), static_cast<uint32_t>(static_cast<uint64_t>(p) >> 32), kDomainData, 0};
    Philox(c, k0, k1);
    const double u0 = Uniform53(c[0], c[1]), u1 = Uniform53(c[2], c[3]);
    const double r = std::sqrt(-2 * std::log(1 - u0));
    const double theta = two_pi * u1;
    double sin_theta, cos_theta;
    sincos(theta, &sin_theta, &cos_theta);  // glibc: sin's and cos's values, in one reduction
    const long at = 2 * p - from;  // -1 for the first pair of an odd `from`: only its second value
    if (at >= 0) out[at] = static_cast<float>(r * cos_theta);
    if (at + 1 < n) out[at + 1] = static_cast<float>(r * sin_theta);
  }
}
