// Blocked SGEMM (Goto/BLIS scheme): B is packed into KC×NC blocks of NR-column panels, A
// into MC×KC blocks of MR-row panels, and an MR×NR register tile accumulates with FMA.
// Built once per instruction set (binding.gyp): MDT_AVX512 selects 16-wide vectors,
// otherwise 8-wide AVX2.
// Everything here has internal linkage but the one exported table, so the objects built
// with different -m flags share no code with each other or with the driver.
#include <stdlib.h>
#include <string.h>

#include "gemm.h"

namespace {

// Measured on a Sapphire Rapids core (2 MiB L2) and sized for Zen 3 too (512 KiB L2): the
// KC×NC block of B stays in L2, one MR×KC sliver of A in L1, the MC×KC block of A in L3.
#ifdef MDT_AVX512
constexpr int VW = 16;  // floats per vector
constexpr int MR = 8;   // 8×48 tile: 24 of the 32 zmm registers accumulate
constexpr int NV = 3;
constexpr long KC = 384;
constexpr long NC = 576;
#define MDT_KERNEL mdt_kernel_avx512
#else
constexpr int VW = 8;
constexpr int MR = 6;  // 6×16 tile: 12 of the 16 ymm registers accumulate
constexpr int NV = 2;
constexpr long KC = 192;
constexpr long NC = 384;
#define MDT_KERNEL mdt_kernel_avx2
#endif
constexpr int NR = NV * VW;
constexpr long MC = 960;
static_assert(NC % NR == 0 && MC % MR == 0, "blocks must hold whole tiles");

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));

long lmin(long x, long y) { return x < y ? x : y; }

// dst[p*W + r] = src[r*ld + p] for r < rows, 0 for rows <= r < W: rows of src become
// interleaved columns (A stored m×k, or B stored n×k).
template <int W>
void pack_strided(const float* src, long ld, long rows, long depth, float* dst) {
  if (rows == W) {
    const float* s[W];
    for (int r = 0; r < W; ++r) s[r] = src + r * ld;
    for (long p = 0; p < depth; ++p) {
#pragma GCC unroll 32
      for (int r = 0; r < W; ++r) dst[r] = s[r][p];
      dst += W;
    }
    return;
  }
  for (long p = 0; p < depth; ++p) {
    for (long r = 0; r < rows; ++r) dst[r] = src[r * ld + p];
    for (long r = rows; r < W; ++r) dst[r] = 0.0f;
    dst += W;
  }
}

// dst[p*W + c] = src[p*ld + c] for c < cols, zero-padded to W (A stored k×m, or B stored k×n).
template <int W>
void pack_contiguous(const float* src, long ld, long cols, long depth, float* dst) {
  for (long p = 0; p < depth; ++p) {
    if (cols == W) {
      memcpy(dst, src + p * ld, W * sizeof(float));
    } else {
      memcpy(dst, src + p * ld, cols * sizeof(float));
      memset(dst + cols, 0, (W - cols) * sizeof(float));
    }
    dst += W;
  }
}

// op(A)[i0 : i0+mc, p0 : p0+kc] as panels of MR rows.
void pack_a(const MdtGemm* g, long i0, long mc, long p0, long kc, float* dst) {
  for (long i = 0; i < mc; i += MR) {
    long rows = lmin(MR, mc - i);
    if (g->ta) pack_contiguous<MR>(g->a + p0 * g->m + i0 + i, g->m, rows, kc, dst);
    else pack_strided<MR>(g->a + (i0 + i) * g->k + p0, g->k, rows, kc, dst);
    dst += MR * kc;
  }
}

void pack_b(const MdtGemm* g, long p0, long kc, long j0, long nc, long first, long last, float* dst) {
  for (long panel = first; panel < last; ++panel) {
    const long j = panel * NR;
    const long cols = lmin(NR, nc - j);
    float* d = dst + j * kc;
    if (g->tb) pack_strided<NR>(g->b + (j0 + j) * g->k + p0, g->k, cols, kc, d);
    else pack_contiguous<NR>(g->b + p0 * g->n + j0 + j, g->n, cols, kc, d);
  }
}

// c[MR×NR] (row stride ldc) = or += a-panel · b-panel over kc.
inline void micro(long kc, const float* __restrict a, const float* __restrict b, float* __restrict c, long ldc, bool acc) {
  vf r[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) r[i][j] = vf{};
  for (long p = 0; p < kc; ++p) {
    vf bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = *reinterpret_cast<const vf*>(b + j * VW);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      float s = a[i];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) r[i][j] += s * bv[j];
    }
    a += MR;
    b += NR;
  }
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      vfu* dst = reinterpret_cast<vfu*>(c + i * ldc + j * VW);
      *dst = acc ? *dst + r[i][j] : r[i][j];
    }
}

// A tile cut by the matrix edge: computed whole into a scratch tile, then the valid part kept.
void micro_edge(long kc, const float* a, const float* b, float* c, long ldc, bool acc, long mr, long nr) {
  alignas(64) float t[MR * NR];
  micro(kc, a, b, t, NR, false);
  for (long i = 0; i < mr; ++i)
    for (long j = 0; j < nr; ++j) c[i * ldc + j] = acc ? c[i * ldc + j] + t[i * NR + j] : t[i * NR + j];
}

// Threads are few and long-lived (the pool's workers and the JS thread): the buffer stays.
thread_local float* packed_a = nullptr;

void multiply(const MdtGemm* g, long i0, long mc, long p0, long kc, long j0, long nc, const float* packed_b, int acc) {
  if (packed_a == nullptr) packed_a = static_cast<float*>(aligned_alloc(64, MC * KC * sizeof(float)));
  pack_a(g, i0, mc, p0, kc, packed_a);
  const long ldc = g->n;
  for (long ir = 0; ir < mc; ir += MR) {
    const long mr = lmin(MR, mc - ir);
    const float* ap = packed_a + ir * kc;
    for (long jr = 0; jr < nc; jr += NR) {
      const long nr = lmin(NR, nc - jr);
      float* c = g->c + (i0 + ir) * ldc + j0 + jr;
      if (mr == MR && nr == NR) micro(kc, ap, packed_b + jr * kc, c, ldc, acc);
      else micro_edge(kc, ap, packed_b + jr * kc, c, ldc, acc, mr, nr);
    }
  }
}

}  // namespace

extern "C" const MdtKernel MDT_KERNEL = {MR, NR, MC, KC, NC, pack_b, multiply};
