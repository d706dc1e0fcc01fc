// The interface between the ISA-neutral driver (addon.cc) and the kernel file compiled once
// per instruction set (kernel.cc). Plain C only: the kernel objects are built with wider -m
// flags, so nothing inline may be shared between them and the driver.
#ifndef MDT_GEMM_H
#define MDT_GEMM_H

#ifdef __cplusplus
extern "C" {
#endif

// C (m×n, row-major, ldc = n) = op(A) · op(B), op(A) m×k, op(B) k×n. Stored A is m×k
// (row-major), or k×m when ta; stored B is k×n, or n×k when tb.
typedef struct {
  const float* a;
  const float* b;
  float* c;
  long m, n, k;
  int ta, tb;
  // Added to every row of C (n floats) by the driver once a block's last depth slice is in,
  // while the block is still in cache; null for none.
  const float* bias;
} MdtGemm;

// One build of the blocked product. The driver walks the blocks: for each NC-wide column
// block and KC-deep slice it packs B once (pack_b, possibly a share of the panels per
// thread), then multiplies row blocks of at most MC rows against it.
typedef struct {
  long mr, nr, mc, kc, nc;
  // Packs panels [first, last) (nr columns each) of op(B)[p0 : p0+kc, j0 : j0+nc] into the
  // block layout at dst: panel j at dst + j*nr*kc, zero-padded past nc.
  void (*pack_b)(const MdtGemm* g, long p0, long kc, long j0, long nc, long first, long last, float* dst);
  // C[i0 : i0+mc, j0 : j0+nc] = (or += when acc) op(A)[i0 : i0+mc, p0 : p0+kc] · the packed
  // block, whose first panel is at packed_b. mc <= mc of this struct. A is packed into a
  // buffer of the calling thread.
  void (*multiply)(const MdtGemm* g, long i0, long mc, long p0, long kc, long j0, long nc, const float* packed_b, int acc);
} MdtKernel;

extern const MdtKernel mdt_kernel_avx2;
extern const MdtKernel mdt_kernel_avx512;

#ifdef __cplusplus
}
#endif

#endif
