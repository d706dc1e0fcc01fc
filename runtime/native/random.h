// The standard normal draws of dsl/random.ts's normal(key, n), natively (random.cc): pairs
// p0 .. p1 of out[0 .. n) (pair p is out[2p], out[2p + 1], from Philox block p).
#pragma once
#include <cstdint>

void mdt_normal(uint32_t k0, uint32_t k1, float* out, long n, long p0, long p1);
