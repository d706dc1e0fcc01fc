// Fused pointwise kernels (pointwise.cc, built with AVX2/FMA and libmvec's vector expf): each
// does in one pass over memory what takes tfjs 5–15 separate elementwise kernels, which on
// the wasm heap are bound by memory bandwidth, not arithmetic. The driver (addon.cc) splits
// the work into ranges for its thread pool. Plain C, like gemm.h.
#ifndef MDT_POINTWISE_H
#define MDT_POINTWISE_H

#ifdef __cplusplus
extern "C" {
#endif

// y[i] = GELU_tanh(x[i]) = x·σ(x·(A + B·x²)), A = 2·sqrt(2/π), B = 0.044715·A, for i in [begin, end).
void mdt_gelu(const float* x, float* y, long begin, long end);
// dx[i] = dy[i]·GELU_tanh'(x[i]).
void mdt_gelu_grad(const float* dy, const float* x, float* dx, long begin, long end);

// Group g of adaLN's modulate(LN(x)): x is (G, L, D), shift and scale (G, D).
// z = (x − μ)·ρ·(1 + scale) + shift with ρ = 1/sqrt(var + eps) per row (biased variance);
// μ and ρ of the group's L rows go to mean[g·L ..] and rstd[g·L ..].
void mdt_ln_modulate(const float* x, const float* shift, const float* scale, float eps, long l, long d, long g,
                     float* z, float* mean, float* rstd);
// Its gradient for group g, from dz: dx (G, L, D), and the group's dshift, dscale (D each,
// sums over its L rows). With x̂ = (x − μ)·ρ and u = dz·(1 + scale):
// dx = ρ·(u − mean(u) − x̂·mean(u·x̂)), dshift = Σ dz, dscale = Σ dz·x̂. When residual is not
// null it is added to dx (the skip connection around the branch).
void mdt_ln_modulate_grad(const float* dz, const float* x, const float* mean, const float* rstd, const float* scale,
                          const float* residual, long l, long d, long g, float* dx, float* dshift, float* dscale);

// Attention's softmax over rows of length l, for groups [g0, g1) of (l, l) logits, group
// g = sample·heads + head: p = softmax(x + bias) with bias (bias_batches, heads, l, l) taken
// at sample 0 when bias_batches is 1, or bias null for none.
void mdt_softmax_bias(const float* x, const float* bias, long l, long heads, long bias_batches, float* p, long g0, long g1);
// dx = p·(dp − Σ_row p·dp) for rows [begin, end) of length l.
void mdt_softmax_grad(const float* p, const float* dp, long l, float* dx, long begin, long end);
// out[o, i] = Σ_r x[o, r, i] for x (outer, reduced, inner), columns [i0, i1) of outer row o.
void mdt_sum_middle(const float* x, long reduced, long inner, long o, long i0, long i1, float* out);

// Optimizer updates on flat parameter vectors (compile/optim.ts), elements [begin, end); the
// hyperparameters are those of runtime/fused.ts' adamwUpdate / adanUpdate (h[0..] in its order).
// AdamW: m' = b1·m + (1 − b1)·g, v' = b2·v + (1 − b2)·g², p' = p·(1 − lr·wd) − (lr/bc1)·m'/(sqrt(v')/sqrt(bc2) + eps).
// h = {lr, b1, b2, eps, wd, bc1, sqrt(bc2)}.
void mdt_adamw(const float* p, const float* g, const float* m, const float* v, const double* h, float* p1, float* m1, float* v1,
               long begin, long end);
// Adan (sail-sg, no-prox form with a final division by 1 + lr·wd), on g·clip;
// h = {lr, b1, b2, b3, eps, wd, bc1, bc2, sqrt(bc3), clip, first step (1 or 0)}.
void mdt_adan(const float* p, const float* g, const float* m, const float* n, const float* diff, const float* neg, const double* h,
              float* p1, float* m1, float* n1, float* d1, float* neg1, long begin, long end);
// e' = decay·e + (1 − decay)·p.
void mdt_ema(const float* e, const float* p, float decay, float* out, long begin, long end);
// Self-attention straight from the qkv projection, for the (sample, head) groups g in [g0, g1):
// qkv (B, l, 3·heads·hd) as the qkv linear writes it (q, k, v thirds), out (B, l, heads·hd) with
// the heads merged; out = softmax(scale·q·kᵀ + bias)·v, bias (bias_batches, heads, l, l) or null.
// scratch holds mdt_attention_scratch(l, hd) floats.
long mdt_attention_scratch(long l, long hd);
void mdt_attention(const float* qkv, const float* bias, long l, long heads, long hd, long bias_batches, float scale, float* out,
                   long g0, long g1, float* scratch);
// o[j] = a[j·sa] op b[j·sb] for j < n (strides 0 or 1 take the vector paths); op: 0 add, 1 sub, 2 mul.
void mdt_binary_row(int op, const float* a, long sa, const float* b, long sb, float* o, long n);
// How many of x[0, n) are NaN or ±Inf (exponent bits all set; integer tests, so -ffast-math keeps them).
long mdt_count_non_finite(const float* x, long n);

#ifdef __cplusplus
}
#endif

#endif
