// The standard normal draws of dsl/random.ts's normal(key, n, from), natively (random.cc): pairs
// p0 .. p1 of the stream (pair p is its values 2p and 2p + 1, from Philox block p), written where
// they fall in out[0 .. n) = the stream's values from .. from + n.
#pragma once
#include <cstdint>

// Philox4x32-10's multipliers and key increments (both paths use them).
constexpr uint32_t kPhiloxM0 = 0xd2511f53u, kPhiloxM1 = 0xcd9e8d57u, kPhiloxW0 = 0x9e3779b9u, kPhiloxW1 = 0xbb67ae85u;

void mdt_normal(uint32_t k0, uint32_t k1, float* out, long from, long n, long p0, long p1);
// The same, four pairs at a time (random_avx2.cc): only on a CPU with AVX2.
void mdt_normal_avx2(uint32_t k0, uint32_t k1, float* out, long from, long n, long p0, long p1);
