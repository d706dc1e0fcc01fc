// N-API entry points of the native SGEMM, the fused pointwise kernels and attention, gather and
// segment sum, strided copies and broadcasting binary ops, the NaN/Inf count, their thread pool
// and the choice of kernel build.
// Callers pass Float32Array views (on ArrayBuffers or on the wasm backend's SharedArrayBuffer
// heap): the product runs on them in place, synchronously, on the calling thread plus the
// pool's workers.
#include <node_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gemm.h"
#include "pointwise.h"
#include "random.h"

namespace {

// Below this many flops a product runs on the calling thread alone: waking a worker costs
// more than it saves.
constexpr double kParallelFlops = 2e6;
// How long an idle worker spins before it sleeps: long enough for back-to-back products,
// short enough not to hold a core the wasm backend's own threads may want.
constexpr auto kSpin = std::chrono::microseconds(50);
// Pauses a thread spends at a barrier before it yields its core: when the machine is
// shared, the thread it waits for may be queued behind it.
constexpr int kBarrierSpins = 200;
constexpr int kMaxThreads = 64;

void Relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Fixed workers; RunAll runs fn(id) once on every thread, the caller being id 0.
class Pool {
 public:
  int Threads() const { return static_cast<int>(workers_.size()) + 1; }

  void Resize(int threads) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_.store(true, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    stop_.store(false, std::memory_order_relaxed);
    // The generation a new worker has seen is read here, not when its thread first runs: a RunAll
    // issued before then would otherwise look already seen, and wait for that worker forever.
    const uint64_t seen = gen_.load(std::memory_order_acquire);
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i, seen] { Loop(i, seen); });
  }

  template <typename F>
  void RunAll(const F& fn) {
    if (workers_.empty()) {
      fn(0);
      return;
    }
    body_ = [](const void* f, int id) { (*static_cast<const F*>(f))(id); };
    fn_ = &fn;
    finished_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      gen_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) cv_.notify_all();
    fn(0);
    const int n = static_cast<int>(workers_.size());
    while (finished_.load(std::memory_order_acquire) < n) std::this_thread::yield();
  }

 private:
  void Loop(int id, uint64_t seen) {
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      while (gen_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) Relax();
      if (gen_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1, std::memory_order_acq_rel);
        cv_.wait(lock, [&] { return gen_.load(std::memory_order_acquire) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_acq_rel);
      }
      seen = gen_.load(std::memory_order_acquire);
      if (stop_.load(std::memory_order_relaxed)) return;
      body_(fn_, id);
      finished_.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<int> finished_{0};
  std::atomic<bool> stop_{false};
  void (*body_)(const void*, int) = nullptr;
  const void* fn_ = nullptr;
};

// Where the pool's threads meet between the phases of a shared product.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}

  void Wait() {
    const unsigned g = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; gen_.load(std::memory_order_acquire) == g; ++spins) {
      if (spins < kBarrierSpins) Relax();
      else std::this_thread::yield();
    }
  }

 private:
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<unsigned> gen_{0};
};

// Never destroyed: its workers must outlive every caller, and joining them from a static
// destructor at process exit could block; exit ends them.
Pool* pool = nullptr;
// The pool serves one product at a time, whichever Node environment (thread) calls.
std::mutex busy;
const MdtKernel* kernel = nullptr;
const char* isa = "none";

float* AllocPacked() {
  const long floats = std::max(mdt_kernel_avx2.kc * mdt_kernel_avx2.nc, mdt_kernel_avx512.kc * mdt_kernel_avx512.nc);
  return static_cast<float*>(aligned_alloc(64, floats * sizeof(float)));
}

// Each thread's packed block of B for products it computes alone; the shared one for
// products all threads compute together. Both live as long as their threads.
thread_local float* own_b = nullptr;
float* shared_b = nullptr;

// Equal depth slices, so a k just above kc is not split into a full and a tiny slice.
long DepthStep(long k, long kc) {
  const long slices = (k + kc - 1) / kc;
  return (k + slices - 1) / slices;
}

// C[i0 : i0+rows, j0 : j0+width] += bias[j0 : j0+width] when the product has a bias and the
// depth slice just multiplied was the last.
void AddBias(const MdtGemm& g, long i0, long rows, long j0, long width, bool last) {
  if (g.bias == nullptr || !last) return;
  for (long i = i0; i < i0 + rows; ++i) {
    float* c = g.c + i * g.n + j0;
    for (long j = 0; j < width; ++j) c[j] += g.bias[j0 + j];
  }
}

// One product on the calling thread.
void Alone(const MdtKernel& kn, const MdtGemm& g) {
  if (own_b == nullptr) own_b = AllocPacked();
  const long kstep = DepthStep(g.k, kn.kc);
  for (long jc = 0; jc < g.n; jc += kn.nc) {
    const long nc = std::min(kn.nc, g.n - jc);
    for (long pc = 0; pc < g.k; pc += kstep) {
      const long kc = std::min(kstep, g.k - pc);
      kn.pack_b(&g, pc, kc, jc, nc, 0, (nc + kn.nr - 1) / kn.nr, own_b);
      for (long ic = 0; ic < g.m; ic += kn.mc) {
        kn.multiply(&g, ic, std::min(kn.mc, g.m - ic), pc, kc, jc, nc, own_b, pc > 0);
        AddBias(g, ic, std::min(kn.mc, g.m - ic), jc, nc, pc + kc == g.k);
      }
    }
  }
}

// One product on every thread of the pool: for each block of B, the threads pack its panels
// together, then share out pieces of C (row chunks, and column groups when rows are few),
// each claimed when a thread is free, so a thread slowed by other load takes fewer.
void Together(const MdtKernel& kn, const MdtGemm& g) {
  const int threads = pool->Threads();
  const long kstep = DepthStep(g.k, kn.kc);
  const long slices = (g.k + kstep - 1) / kstep;
  const long blocks = ((g.n + kn.nc - 1) / kn.nc) * slices;
  const long want = 4L * threads;
  long rows = (g.m + want - 1) / want;
  rows = std::min(kn.mc, std::max(2 * kn.mr, (rows + kn.mr - 1) / kn.mr * kn.mr));
  const long rowChunks = (g.m + rows - 1) / rows;
  std::vector<std::atomic<long>> next(2 * blocks);
  for (auto& c : next) c.store(0, std::memory_order_relaxed);
  Barrier barrier(threads);
  if (shared_b == nullptr) shared_b = AllocPacked();
  pool->RunAll([&](int) {
    long block = 0;
    for (long jc = 0; jc < g.n; jc += kn.nc) {
      const long nc = std::min(kn.nc, g.n - jc);
      const long panels = (nc + kn.nr - 1) / kn.nr;
      const long groupPanels = rowChunks >= want ? panels : (panels * rowChunks + want - 1) / want;
      const long groups = (panels + groupPanels - 1) / groupPanels;
      for (long pc = 0; pc < g.k; pc += kstep, ++block) {
        const long kc = std::min(kstep, g.k - pc);
        for (long p; (p = next[2 * block].fetch_add(2, std::memory_order_relaxed)) < panels;)
          kn.pack_b(&g, pc, kc, jc, nc, p, std::min(panels, p + 2), shared_b);
        barrier.Wait();
        for (long item; (item = next[2 * block + 1].fetch_add(1, std::memory_order_relaxed)) < rowChunks * groups;) {
          const long i0 = (item / groups) * rows;
          const long first = (item % groups) * groupPanels;
          const long j0 = first * kn.nr;
          const long width = std::min(nc, (first + groupPanels) * kn.nr) - j0;
          kn.multiply(&g, i0, std::min(rows, g.m - i0), pc, kc, jc + j0, width, shared_b + j0 * kc, pc > 0);
          AddBias(g, i0, std::min(rows, g.m - i0), jc + j0, width, pc + kc == g.k);
        }
        // The next block's packing overwrites shared_b.
        barrier.Wait();
      }
    }
  });
}

bool CpuHas(const char* what) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (std::strcmp(what, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (std::strcmp(what, "avx512") == 0) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
  return false;
}

napi_value Throw(napi_env env, const std::string& msg) {
  napi_throw_type_error(env, nullptr, msg.c_str());
  return nullptr;
}

#define NAPI_OK(call)                                                        \
  do {                                                                       \
    if ((call) != napi_ok) return Throw(env, "native gemm: " #call " failed"); \
  } while (0)

struct Floats {
  float* data;
  size_t length;
};

bool GetFloats(napi_env env, napi_value v, Floats* out) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  void* data = nullptr;
  size_t length = 0;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr) != napi_ok) return false;
  if (type != napi_float32_array) return false;
  out->data = static_cast<float*>(data);
  out->length = length;
  return true;
}

// A batch index array (Int32Array), or null/undefined for the default.
bool GetIndex(napi_env env, napi_value v, std::vector<int32_t>* out, bool* given) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_null || t == napi_undefined) {
    *given = false;
    return true;
  }
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  void* data = nullptr;
  size_t length = 0;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr) != napi_ok || type != napi_int32_array) return false;
  out->assign(static_cast<int32_t*>(data), static_cast<int32_t*>(data) + length);
  *given = true;
  return true;
}

bool GetLong(napi_env env, napi_value v, long* out) {
  int64_t x;
  if (napi_get_value_int64(env, v, &x) != napi_ok || x < 0) return false;
  *out = static_cast<long>(x);
  return true;
}

// Each operand's batch index for each output batch: given, or i when it holds one matrix
// per output batch, or 0 when it holds a single matrix.
bool ResolveIndex(const std::vector<int32_t>& given, bool has, size_t stored, long batches, std::vector<long>* out, std::string* err, const char* name) {
  out->resize(batches);
  for (long i = 0; i < batches; ++i) {
    long j = has ? given[i] : (stored == 1 ? 0 : i);
    if (j < 0 || static_cast<size_t>(j) >= stored) {
      *err = std::string("native gemm: ") + name + " batch index " + std::to_string(j) + " for output batch " +
             std::to_string(i) + " is outside its " + std::to_string(stored) + " stored matrices";
      return false;
    }
    (*out)[i] = j;
  }
  return true;
}

// gemm(a, b, c, m, n, k, transposeA, transposeB, aIndex?, bIndex?, bias?): c[i] = op(a[aIndex[i]]) · op(b[bIndex[i]]) (+ bias on every row).
napi_value Gemm(napi_env env, napi_callback_info info) {
  if (kernel == nullptr) return Throw(env, "native gemm: this CPU has no supported kernel (needs AVX2 and FMA)");
  size_t argc = 11;
  napi_value argv[11];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 8) return Throw(env, "native gemm: expected (a, b, c, m, n, k, transposeA, transposeB, aIndex?, bIndex?, bias?), got " + std::to_string(argc) + " arguments");
  Floats a, b, c;
  if (!GetFloats(env, argv[0], &a) || !GetFloats(env, argv[1], &b) || !GetFloats(env, argv[2], &c))
    return Throw(env, "native gemm: a, b and c must be Float32Arrays");
  long m, n, k;
  if (!GetLong(env, argv[3], &m) || !GetLong(env, argv[4], &n) || !GetLong(env, argv[5], &k))
    return Throw(env, "native gemm: m, n and k must be non-negative integers");
  bool ta, tb;
  if (napi_get_value_bool(env, argv[6], &ta) != napi_ok || napi_get_value_bool(env, argv[7], &tb) != napi_ok)
    return Throw(env, "native gemm: transposeA and transposeB must be booleans");
  std::vector<int32_t> ai, bi;
  bool hasA = false, hasB = false;
  if ((argc > 8 && !GetIndex(env, argv[8], &ai, &hasA)) || (argc > 9 && !GetIndex(env, argv[9], &bi, &hasB)))
    return Throw(env, "native gemm: aIndex and bIndex must be Int32Arrays, null or undefined");
  Floats bias{nullptr, 0};
  napi_valuetype biasType = napi_undefined;
  if (argc > 10 && napi_typeof(env, argv[10], &biasType) == napi_ok && biasType != napi_null && biasType != napi_undefined) {
    if (!GetFloats(env, argv[10], &bias)) return Throw(env, "native gemm: bias must be a Float32Array, null or undefined");
    if (bias.length != static_cast<size_t>(n)) return Throw(env, "native gemm: bias holds " + std::to_string(bias.length) + " floats, expected n = " + std::to_string(n));
  }
  if (m == 0 || n == 0) return nullptr;
  const size_t mn = static_cast<size_t>(m) * n, mk = static_cast<size_t>(m) * k, kn = static_cast<size_t>(k) * n;
  if (c.length % mn != 0)
    return Throw(env, "native gemm: c holds " + std::to_string(c.length) + " floats, not a multiple of m·n = " + std::to_string(mn));
  const long batches = static_cast<long>(c.length / mn);
  if ((hasA && static_cast<long>(ai.size()) != batches) || (hasB && static_cast<long>(bi.size()) != batches))
    return Throw(env, "native gemm: aIndex and bIndex must have one entry per output batch (" + std::to_string(batches) + ")");
  const size_t aStored = mk == 0 ? 1 : a.length / mk, bStored = kn == 0 ? 1 : b.length / kn;
  if ((mk != 0 && (a.length % mk != 0 || aStored == 0)) || (kn != 0 && (b.length % kn != 0 || bStored == 0)))
    return Throw(env, "native gemm: a holds " + std::to_string(a.length) + " floats and b " + std::to_string(b.length) +
                          "; expected whole m·k = " + std::to_string(mk) + " and k·n = " + std::to_string(kn) + " matrices");
  std::vector<long> ax, bx;
  std::string err;
  if (!ResolveIndex(ai, hasA, aStored, batches, &ax, &err, "a") || !ResolveIndex(bi, hasB, bStored, batches, &bx, &err, "b"))
    return Throw(env, err);

  std::lock_guard<std::mutex> hold(busy);
  std::vector<MdtGemm> g(batches);
  for (long i = 0; i < batches; ++i) g[i] = {a.data + ax[i] * mk, b.data + bx[i] * kn, c.data + i * mn, m, n, k, ta, tb, bias.data};
  if (k == 0) {
    std::memset(c.data, 0, c.length * sizeof(float));
    for (const MdtGemm& p : g) AddBias(p, 0, m, 0, n, true);
    return nullptr;
  }
  const MdtKernel& kern = *kernel;
  const int threads = pool->Threads();
  if (threads == 1 || 2.0 * batches * m * n * k < kParallelFlops) {
    for (const MdtGemm& p : g) Alone(kern, p);
  } else if (batches >= 2 * threads) {
    // Enough products to keep every thread busy: each computes whole ones.
    std::atomic<long> next{0};
    pool->RunAll([&](int) {
      for (long i; (i = next.fetch_add(1, std::memory_order_relaxed)) < batches;) Alone(kern, g[i]);
    });
  } else {
    for (const MdtGemm& p : g) Together(kern, p);
  }
  return nullptr;
}

// Runs body(begin, end) over [0, n) in chunks of at least `grain` items, claimed by the pool's
// threads as they come free (the caller holds `busy`).
template <typename F>
void ParallelFor(long n, long grain, const F& body) {
  const int threads = pool->Threads();
  if (threads == 1 || n <= grain) {
    if (n > 0) body(0, n);
    return;
  }
  const long chunk = std::max(grain, (n + 4L * threads - 1) / (4L * threads));
  std::atomic<long> next{0};
  pool->RunAll([&](int) {
    for (long b; (b = next.fetch_add(chunk, std::memory_order_relaxed)) < n;) body(b, std::min(n, b + chunk));
  });
}

// Elementwise work below this many floats stays on the calling thread.
constexpr long kParallelFloats = 1L << 15;

bool GetInts(napi_env env, napi_value v, const int32_t** data, size_t* length) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  void* p = nullptr;
  if (napi_get_typedarray_info(env, v, &type, length, &p, nullptr, nullptr) != napi_ok || type != napi_int32_array) return false;
  *data = static_cast<const int32_t*>(p);
  return true;
}

// Arguments 0..n-1 as Float32Arrays, or an exception naming the kernel; null ones allowed where `optional`.
bool FloatArgs(napi_env env, napi_value* argv, size_t argc, size_t n, const char* name, Floats* out, uint32_t optional = 0) {
  if (argc < n) {
    Throw(env, std::string("native ") + name + ": expected " + std::to_string(n) + " array arguments, got " + std::to_string(argc));
    return false;
  }
  for (size_t i = 0; i < n; ++i) {
    napi_valuetype t;
    if ((optional >> i & 1) && napi_typeof(env, argv[i], &t) == napi_ok && t == napi_null) {
      out[i] = {nullptr, 0};
      continue;
    }
    if (!GetFloats(env, argv[i], &out[i])) {
      Throw(env, std::string("native ") + name + ": argument " + std::to_string(i) + " must be a Float32Array");
      return false;
    }
  }
  return true;
}

napi_value NoKernel(napi_env env, const char* name) {
  return Throw(env, std::string("native ") + name + ": this CPU has no supported kernel (needs AVX2 and FMA)");
}

// A kernel call's arguments (at most 12), the first ones read as Float32Arrays.
struct Call {
  size_t argc = 12;
  napi_value argv[12];
  Floats f[11];
};

// Starts a kernel call: needs the AVX2 kernels, reads the arguments, and checks the first
// `floats` as Float32Arrays (null allowed at the bits of `optional`); false once it has thrown.
bool Begin(napi_env env, napi_callback_info info, const char* name, size_t floats, Call* c, uint32_t optional = 0) {
  if (kernel == nullptr) {
    NoKernel(env, name);
    return false;
  }
  if (napi_get_cb_info(env, info, &c->argc, c->argv, nullptr, nullptr) != napi_ok) {
    Throw(env, std::string("native ") + name + ": could not read the arguments");
    return false;
  }
  return FloatArgs(env, c->argv, c->argc, floats, name, c->f, optional);
}

// gelu(x, y) and geluGrad(dy, x, dx): GELU (tanh form) and its backward, elementwise.
napi_value Gelu(napi_env env, napi_callback_info info) {
  Call c;
  if (!Begin(env, info, "gelu", 2, &c)) return nullptr;
  if (c.f[0].length != c.f[1].length) return Throw(env, "native gelu: x has " + std::to_string(c.f[0].length) + " floats, y " + std::to_string(c.f[1].length));
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(static_cast<long>(c.f[0].length), kParallelFloats, [&](long b, long e) { mdt_gelu(c.f[0].data, c.f[1].data, b, e); });
  return nullptr;
}

napi_value GeluGrad(napi_env env, napi_callback_info info) {
  Call c;
  if (!Begin(env, info, "geluGrad", 3, &c)) return nullptr;
  if (c.f[0].length != c.f[1].length || c.f[1].length != c.f[2].length)
    return Throw(env, "native geluGrad: dy, x and dx must have equal lengths, got " + std::to_string(c.f[0].length) + ", " +
                          std::to_string(c.f[1].length) + ", " + std::to_string(c.f[2].length));
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(static_cast<long>(c.f[0].length), kParallelFloats, [&](long b, long e) { mdt_gelu_grad(c.f[0].data, c.f[1].data, c.f[2].data, b, e); });
  return nullptr;
}

// Reads (l, d) from argv[i], argv[i+1] and checks that x holds whole (l, d) groups; G out.
bool Groups(napi_env env, napi_value* argv, size_t i, size_t xLength, const char* name, long* l, long* d, long* groups) {
  if (!GetLong(env, argv[i], l) || !GetLong(env, argv[i + 1], d) || *l == 0 || *d == 0) {
    Throw(env, std::string("native ") + name + ": L and D must be positive integers");
    return false;
  }
  if (xLength % (*l * *d) != 0) {
    Throw(env, std::string("native ") + name + ": x holds " + std::to_string(xLength) + " floats, not whole (L, D) = (" + std::to_string(*l) +
                   ", " + std::to_string(*d) + ") groups");
    return false;
  }
  *groups = static_cast<long>(xLength) / (*l * *d);
  return true;
}

bool Sized(napi_env env, const Floats& f, size_t want, const char* name, const char* what) {
  if (f.length == want) return true;
  Throw(env, std::string("native ") + name + ": " + what + " holds " + std::to_string(f.length) + " floats, expected " + std::to_string(want));
  return false;
}

// lnModulate(x, shift, scale, z, mean, rstd, eps, L, D).
napi_value LnModulate(napi_env env, napi_callback_info info) {
  Call c;
  if (!Begin(env, info, "lnModulate", 6, &c)) return nullptr;
  double eps;
  if (c.argc < 9 || napi_get_value_double(env, c.argv[6], &eps) != napi_ok) return Throw(env, "native lnModulate: eps must be a number");
  long l, d, groups;
  if (!Groups(env, c.argv, 7, c.f[0].length, "lnModulate", &l, &d, &groups)) return nullptr;
  const size_t gd = groups * d, rows = groups * l;
  if (!Sized(env, c.f[1], gd, "lnModulate", "shift") || !Sized(env, c.f[2], gd, "lnModulate", "scale") ||
      !Sized(env, c.f[3], c.f[0].length, "lnModulate", "z") || !Sized(env, c.f[4], rows, "lnModulate", "mean") ||
      !Sized(env, c.f[5], rows, "lnModulate", "rstd"))
    return nullptr;
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(groups, l * d >= kParallelFloats ? 1 : groups, [&](long b, long e) {
    for (long g = b; g < e; ++g) mdt_ln_modulate(c.f[0].data, c.f[1].data, c.f[2].data, static_cast<float>(eps), l, d, g, c.f[3].data, c.f[4].data, c.f[5].data);
  });
  return nullptr;
}

// lnModulateGrad(dz, x, mean, rstd, scale, residual | null, dx, dshift, dscale, L, D).
napi_value LnModulateGrad(napi_env env, napi_callback_info info) {
  Call c;
  if (!Begin(env, info, "lnModulateGrad", 9, &c, 1u << 5)) return nullptr;
  long l, d, groups;
  if (c.argc < 11 || !Groups(env, c.argv, 9, c.f[1].length, "lnModulateGrad", &l, &d, &groups)) return c.argc < 11 ? Throw(env, "native lnModulateGrad: expected 11 arguments") : nullptr;
  const size_t n = c.f[1].length, gd = groups * d, rows = groups * l;
  if (!Sized(env, c.f[0], n, "lnModulateGrad", "dz") || !Sized(env, c.f[2], rows, "lnModulateGrad", "mean") ||
      !Sized(env, c.f[3], rows, "lnModulateGrad", "rstd") || !Sized(env, c.f[4], gd, "lnModulateGrad", "scale") ||
      (c.f[5].data != nullptr && !Sized(env, c.f[5], n, "lnModulateGrad", "residual")) || !Sized(env, c.f[6], n, "lnModulateGrad", "dx") ||
      !Sized(env, c.f[7], gd, "lnModulateGrad", "dshift") || !Sized(env, c.f[8], gd, "lnModulateGrad", "dscale"))
    return nullptr;
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(groups, l * d >= kParallelFloats ? 1 : groups, [&](long b, long e) {
    for (long g = b; g < e; ++g)
      mdt_ln_modulate_grad(c.f[0].data, c.f[1].data, c.f[2].data, c.f[3].data, c.f[4].data, c.f[5].data, l, d, g, c.f[6].data, c.f[7].data, c.f[8].data);
  });
  return nullptr;
}

// The arguments of gather and segmentSum: (src: Float32Array, rowLength > 0, index: Int32Array, out: Float32Array).
struct RowArgs {
  Floats src, out;
  const int32_t* index = nullptr;
  size_t count = 0;
  long row = 0;
};

bool GetRowArgs(napi_env env, napi_callback_info info, const char* name, const char* src, RowArgs* a) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 4 || !GetFloats(env, argv[0], &a->src) ||
      !GetLong(env, argv[1], &a->row) || a->row == 0 || !GetInts(env, argv[2], &a->index, &a->count) || !GetFloats(env, argv[3], &a->out)) {
    Throw(env, std::string("native ") + name + ": expected (" + src + ": Float32Array, rowLength > 0, index: Int32Array, out: Float32Array)");
    return false;
  }
  return true;
}

// gather(table, rowLength, index, out): out row i = table row index[i]; an index outside the
// table is an error, as in tfjs.
napi_value Gather(napi_env env, napi_callback_info info) {
  RowArgs a;
  if (!GetRowArgs(env, info, "gather", "table", &a)) return nullptr;
  const long rows = static_cast<long>(a.src.length) / a.row;
  if (a.out.length != a.count * a.row) return Throw(env, "native gather: out holds " + std::to_string(a.out.length) + " floats, expected " + std::to_string(a.count * a.row));
  for (size_t i = 0; i < a.count; ++i)
    if (a.index[i] < 0 || a.index[i] >= rows)
      return Throw(env, "native gather: index[" + std::to_string(i) + "] = " + std::to_string(a.index[i]) + " is outside the table's " + std::to_string(rows) + " rows");
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(static_cast<long>(a.count), std::max(1L, kParallelFloats / a.row), [&](long b, long e) {
    if (a.row == 1) {
      for (long i = b; i < e; ++i) a.out.data[i] = a.src.data[a.index[i]];
    } else {
      for (long i = b; i < e; ++i) std::memcpy(a.out.data + i * a.row, a.src.data + static_cast<long>(a.index[i]) * a.row, a.row * sizeof(float));
    }
  });
  return nullptr;
}

// segmentSum(values, rowLength, index, out): out row s = Σ of the value rows i with index[i] = s
// (tfjs' UnsortedSegmentSum); rows with an index outside out are dropped, as TensorFlow drops
// negative ones. Each thread sums into its own copy of out, then the copies are added.
napi_value SegmentSum(napi_env env, napi_callback_info info) {
  RowArgs a;
  if (!GetRowArgs(env, info, "segmentSum", "values", &a)) return nullptr;
  if (a.src.length != a.count * a.row)
    return Throw(env, "native segmentSum: values hold " + std::to_string(a.src.length) + " floats, expected " + std::to_string(a.count * a.row));
  const long segments = static_cast<long>(a.out.length) / a.row;
  std::lock_guard<std::mutex> hold(busy);
  const int threads = static_cast<long>(a.count * a.row) < kParallelFloats ? 1 : pool->Threads();
  std::vector<std::vector<float>> partial(threads - 1, std::vector<float>(a.out.length, 0.0f));
  std::memset(a.out.data, 0, a.out.length * sizeof(float));
  const long chunk = (static_cast<long>(a.count) + threads - 1) / threads;
  auto sum = [&](int id) {
    float* acc = id == 0 ? a.out.data : partial[id - 1].data();
    const long e = std::min(static_cast<long>(a.count), (id + 1) * chunk);
    for (long i = id * chunk; i < e; ++i) {
      const long s = a.index[i];
      if (s < 0 || s >= segments) continue;
      for (long j = 0; j < a.row; ++j) acc[s * a.row + j] += a.src.data[i * a.row + j];
    }
  };
  if (threads == 1) sum(0);
  else pool->RunAll(sum);
  for (const auto& p : partial)
    for (size_t j = 0; j < a.out.length; ++j) a.out.data[j] += p[j];
  return nullptr;
}

// softmaxBias(x, bias | null, p, l, heads, biasBatches): x and p (G, l, l), bias (biasBatches, heads, l, l).
napi_value SoftmaxBias(napi_env env, napi_callback_info info) {
  Call c;
  if (!Begin(env, info, "softmaxBias", 3, &c, 1u << 1)) return nullptr;
  long l, heads, bb;
  if (c.argc < 6 || !GetLong(env, c.argv[3], &l) || !GetLong(env, c.argv[4], &heads) || !GetLong(env, c.argv[5], &bb) || l == 0 || heads == 0 || bb == 0)
    return Throw(env, "native softmaxBias: l, heads and biasBatches must be positive integers");
  const size_t ll = l * l;
  if (c.f[0].length % (ll * heads) != 0) return Throw(env, "native softmaxBias: x does not hold whole (heads, l, l) blocks");
  if (!Sized(env, c.f[2], c.f[0].length, "softmaxBias", "p")) return nullptr;
  const long groups = static_cast<long>(c.f[0].length / ll);
  if (c.f[1].data != nullptr) {
    if (!Sized(env, c.f[1], bb * heads * ll, "softmaxBias", "bias")) return nullptr;
    if (bb != 1 && bb * heads != groups) return Throw(env, "native softmaxBias: bias batches must be 1 or the logits' samples");
  }
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(groups, std::max(1L, kParallelFloats / static_cast<long>(ll)), [&](long b, long e) { mdt_softmax_bias(c.f[0].data, c.f[1].data, l, heads, bb, c.f[2].data, b, e); });
  return nullptr;
}

// attention(qkv, bias | null, out, batch, l, heads, hd, biasBatches, scale): see mdt_attention.
napi_value Attention(napi_env env, napi_callback_info info) {
  Call c;
  if (!Begin(env, info, "attention", 3, &c, 1u << 1)) return nullptr;
  long batch, l, heads, hd, bb;
  double scale = 0;
  if (c.argc < 9 || !GetLong(env, c.argv[3], &batch) || !GetLong(env, c.argv[4], &l) || !GetLong(env, c.argv[5], &heads) || !GetLong(env, c.argv[6], &hd) ||
      !GetLong(env, c.argv[7], &bb) || napi_get_value_double(env, c.argv[8], &scale) != napi_ok || l == 0 || heads == 0 || hd == 0 || bb == 0)
    return Throw(env, "native attention: batch, l, heads, hd and biasBatches must be positive integers, scale a number");
  const size_t out = static_cast<size_t>(batch * l * heads * hd);
  if (!Sized(env, c.f[0], 3 * out, "attention", "qkv") || !Sized(env, c.f[2], out, "attention", "out")) return nullptr;
  if (c.f[1].data != nullptr) {
    if (!Sized(env, c.f[1], bb * heads * l * l, "attention", "bias")) return nullptr;
    if (bb != 1 && bb != batch) return Throw(env, "native attention: bias batches must be 1 or the batch");
  }
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(batch * heads, 1, [&](long g0, long g1) {
    std::vector<float> scratch(mdt_attention_scratch(l, hd));
    mdt_attention(c.f[0].data, c.f[1].data, l, heads, hd, bb, static_cast<float>(scale), c.f[2].data, g0, g1, scratch.data());
  });
  return nullptr;
}

// softmaxGrad(p, dp, dx, l).
napi_value SoftmaxGrad(napi_env env, napi_callback_info info) {
  Call c;
  if (!Begin(env, info, "softmaxGrad", 3, &c)) return nullptr;
  long l;
  if (c.argc < 4 || !GetLong(env, c.argv[3], &l) || l == 0 || c.f[0].length % l != 0) return Throw(env, "native softmaxGrad: l must be a positive integer dividing p's length");
  if (!Sized(env, c.f[1], c.f[0].length, "softmaxGrad", "dp") || !Sized(env, c.f[2], c.f[0].length, "softmaxGrad", "dx")) return nullptr;
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(static_cast<long>(c.f[0].length) / l, std::max(1L, kParallelFloats / l), [&](long b, long e) { mdt_softmax_grad(c.f[0].data, c.f[1].data, l, c.f[2].data, b, e); });
  return nullptr;
}

// sumMiddle(x, outer, reduced, inner, out): out (outer, inner) = x (outer, reduced, inner) summed over its middle axis.
napi_value SumMiddle(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Floats x, out;
  long outer, reduced, inner;
  if (argc < 5 || !GetFloats(env, argv[0], &x) || !GetLong(env, argv[1], &outer) || !GetLong(env, argv[2], &reduced) || !GetLong(env, argv[3], &inner) ||
      !GetFloats(env, argv[4], &out) || reduced == 0)
    return Throw(env, "native sumMiddle: expected (x: Float32Array, outer, reduced > 0, inner, out: Float32Array)");
  if (x.length != static_cast<size_t>(outer * reduced * inner) || out.length != static_cast<size_t>(outer * inner))
    return Throw(env, "native sumMiddle: x holds " + std::to_string(x.length) + " and out " + std::to_string(out.length) + " floats for (" +
                          std::to_string(outer) + ", " + std::to_string(reduced) + ", " + std::to_string(inner) + ")");
  std::lock_guard<std::mutex> hold(busy);
  // Work items are (outer row, column block): a block of 4096 columns stays in L1/L2 across the reduced rows.
  const long blocks = (inner + 4095) / 4096;
  ParallelFor(outer * blocks, std::max(1L, kParallelFloats / (4096 * reduced)), [&](long b, long e) {
    for (long w = b; w < e; ++w) {
      const long o = w / blocks, i0 = (w % blocks) * 4096;
      mdt_sum_middle(x.data, reduced, inner, o, i0, std::min(inner, i0 + 4096), out.data);
    }
  });
  return nullptr;
}

bool GetDoubles(napi_env env, napi_value v, size_t want, const double** data) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  void* p = nullptr;
  size_t length = 0;
  if (napi_get_typedarray_info(env, v, &type, &length, &p, nullptr, nullptr) != napi_ok || type != napi_float64_array || length != want) return false;
  *data = static_cast<const double*>(p);
  return true;
}

// n equal-length Float32Arrays, then a Float64Array of `hyper` hyperparameters at argv[n].
template <typename F>
napi_value FlatUpdate(napi_env env, napi_callback_info info, const char* name, size_t n, size_t hyper, const F& body) {
  Call c;
  if (!Begin(env, info, name, n, &c)) return nullptr;
  for (size_t i = 1; i < n; ++i)
    if (c.f[i].length != c.f[0].length)
      return Throw(env, std::string("native ") + name + ": argument " + std::to_string(i) + " holds " + std::to_string(c.f[i].length) +
                            " floats, argument 0 " + std::to_string(c.f[0].length));
  const double* h;
  if (c.argc <= n || !GetDoubles(env, c.argv[n], hyper, &h))
    return Throw(env, std::string("native ") + name + ": argument " + std::to_string(n) + " must be a Float64Array of " + std::to_string(hyper) + " hyperparameters");
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(static_cast<long>(c.f[0].length), kParallelFloats, [&](long b, long e) { body(c.f, h, b, e); });
  return nullptr;
}

// adamw(p, g, m, v, p1, m1, v1, h), adan(p, g, m, n, diff, neg, p1, m1, n1, d1, neg1, h), ema(e, p, out, [decay]).
napi_value AdamW(napi_env env, napi_callback_info info) {
  return FlatUpdate(env, info, "adamw", 7, 7, [](Floats* f, const double* h, long b, long e) {
    mdt_adamw(f[0].data, f[1].data, f[2].data, f[3].data, h, f[4].data, f[5].data, f[6].data, b, e);
  });
}

napi_value Adan(napi_env env, napi_callback_info info) {
  return FlatUpdate(env, info, "adan", 11, 11, [](Floats* f, const double* h, long b, long e) {
    mdt_adan(f[0].data, f[1].data, f[2].data, f[3].data, f[4].data, f[5].data, h, f[6].data, f[7].data, f[8].data, f[9].data, f[10].data, b, e);
  });
}

napi_value Ema(napi_env env, napi_callback_info info) {
  return FlatUpdate(env, info, "ema", 3, 1, [](Floats* f, const double* h, long b, long e) {
    mdt_ema(f[0].data, f[1].data, static_cast<float>(h[0]), f[2].data, b, e);
  });
}

// countNonFinite(x) → how many values of x are NaN or ±Inf; one thread, no lock (a check of
// weights as they load, while another thread reads the next ones).
napi_value CountNonFinite(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  Floats x;
  if (argc < 1 || !GetFloats(env, argv[0], &x)) return Throw(env, "native countNonFinite: expected a Float32Array");
  napi_value out;
  NAPI_OK(napi_create_int64(env, mdt_count_non_finite(x.data, static_cast<long>(x.length)), &out));
  return out;
}

// Raised with any change to a function's arguments (2: normal's `from`).
constexpr int32_t kAddonApi = 2;

// normal(k0, k1, out, from) fills out with normal(key {k0, k1}, out.length, from) of
// dsl/random.ts; fewer pairs than ~35 µs of work (the scalar path's 512, the AVX2 path's 2048)
// stay on the calling thread.
napi_value Normal(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  uint32_t k0 = 0, k1 = 0;
  int64_t from = 0;
  Floats out;
  if (argc < 4 || napi_get_value_uint32(env, argv[0], &k0) != napi_ok || napi_get_value_uint32(env, argv[1], &k1) != napi_ok || !GetFloats(env, argv[2], &out) ||
      napi_get_value_int64(env, argv[3], &from) != napi_ok || from < 0) {
    return Throw(env, "native normal: expected (k0, k1, out Float32Array, from >= 0)");
  }
  const long n = static_cast<long>(out.length), first = static_cast<long>(from) / 2, pairs = (from + n + 1) / 2 - first;
  static const bool avx2 = CpuHas("avx2");
  const long grain = avx2 ? 2048 : 512;
  const auto draw = [&](long b, long e) { (avx2 ? mdt_normal_avx2 : mdt_normal)(k0, k1, out.data, from, n, first + b, first + e); };
  // Only the pool needs `busy`: threads drawing alone (the onnx engine's groups) do not wait on each other.
  if (pairs <= grain) {
    draw(0, pairs);
    return nullptr;
  }
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(pairs, grain, draw);
  return nullptr;
}

// The 4-byte elements of a Float32Array or Int32Array (a copy does not look at them).
bool GetWords(napi_env env, napi_value v, uint32_t** data, size_t* length) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  void* p = nullptr;
  if (napi_get_typedarray_info(env, v, &type, length, &p, nullptr, nullptr) != napi_ok) return false;
  if (type != napi_float32_array && type != napi_int32_array && type != napi_uint32_array) return false;
  *data = static_cast<uint32_t*>(p);
  return true;
}

// Rows r0 .. r1 of a C-order `shape` whose last axis is the row: row(r, at) with at[k] the
// element offset of row r in operand k, base[k] + Σ i_d·strides[k][d] over the outer axes,
// stepped like an odometer from row to row.
template <int N, typename F>
void ForRows(const int32_t* shape, size_t rank, const int32_t* const (&strides)[N], const long (&base)[N], long r0, long r1, const F& row) {
  long idx[8] = {0}, at[N];
  for (int k = 0; k < N; ++k) at[k] = base[k];
  for (long r = r0, d = static_cast<long>(rank) - 2; d >= 0; --d) {
    idx[d] = r % shape[d];
    r /= shape[d];
    for (int k = 0; k < N; ++k) at[k] += idx[d] * strides[k][d];
  }
  for (long r = r0; r < r1; ++r) {
    row(r, at);
    for (long d = static_cast<long>(rank) - 2; d >= 0; --d) {
      for (int k = 0; k < N; ++k) at[k] += strides[k][d];
      if (++idx[d] < shape[d]) break;
      for (int k = 0; k < N; ++k) at[k] -= strides[k][d] * shape[d];
      idx[d] = 0;
    }
  }
}

// stridedCopy(x, out, shape, stride, base): out, in C order over `shape`, takes
// x[base + Σ i_d·stride_d] (4-byte elements): Transpose (permuted strides) and Slice (an offset
// and the input's strides) as one kernel. The caller merges dimensions that are contiguous in
// both, so the innermost one is usually a run of whole rows, copied by memcpy.
napi_value StridedCopy(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  uint32_t* x = nullptr;
  uint32_t* out = nullptr;
  size_t xLength = 0, outLength = 0, rank = 0, strideRank = 0;
  const int32_t* shape = nullptr;
  const int32_t* stride = nullptr;
  int64_t base = 0;
  if (argc < 5 || !GetWords(env, argv[0], &x, &xLength) || !GetWords(env, argv[1], &out, &outLength) || !GetInts(env, argv[2], &shape, &rank) ||
      !GetInts(env, argv[3], &stride, &strideRank) || napi_get_value_int64(env, argv[4], &base) != napi_ok || rank == 0 || rank != strideRank || rank > 8)
    return Throw(env, "native stridedCopy: expected (x, out: Float32Array | Int32Array, shape, stride: Int32Array of one rank 1..8, base)");
  // Bounds: the view must lie inside x (strides are non-negative) and fill out exactly.
  long count = 1, last = base;
  for (size_t d = 0; d < rank; ++d) {
    if (shape[d] < 0 || stride[d] < 0) return Throw(env, "native stridedCopy: negative size or stride");
    count *= shape[d];
    last += static_cast<long>(shape[d] - 1) * stride[d];
  }
  if (static_cast<size_t>(count) != outLength || (count > 0 && (base < 0 || last >= static_cast<long>(xLength))))
    return Throw(env, "native stridedCopy: the view of " + std::to_string(count) + " elements does not fit x (" + std::to_string(xLength) + ") and out (" +
                          std::to_string(outLength) + ")");
  if (count == 0) return nullptr;
  const long inner = shape[rank - 1], innerStride = stride[rank - 1];
  const long rows = count / inner;
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(rows, std::max(1L, kParallelFloats / inner), [&](long r0, long r1) {
    ForRows<1>(shape, rank, {stride}, {static_cast<long>(base)}, r0, r1, [&](long r, const long* at) {
      uint32_t* o = out + r * inner;
      if (innerStride == 1) std::memcpy(o, x + at[0], inner * sizeof(uint32_t));
      else for (long j = 0; j < inner; ++j) o[j] = x[at[0] + j * innerStride];
    });
  });
  return nullptr;
}

// binary(op, a, b, out, shape, aStride, bStride): out, in C order over `shape`, is
// a[Σ i_d·aStride_d] op b[Σ i_d·bStride_d] (op 0 add, 1 sub, 2 mul; strides 0 broadcast). The
// caller merges dimensions, so rows are long and their strides 0 or 1.
napi_value Binary(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int32_t op = -1;
  Floats a, b, out;
  const int32_t *shape = nullptr, *sa = nullptr, *sb = nullptr;
  size_t rank = 0, ra = 0, rb = 0;
  if (argc < 7 || napi_get_value_int32(env, argv[0], &op) != napi_ok || op < 0 || op > 2 || !GetFloats(env, argv[1], &a) || !GetFloats(env, argv[2], &b) ||
      !GetFloats(env, argv[3], &out) || !GetInts(env, argv[4], &shape, &rank) || !GetInts(env, argv[5], &sa, &ra) || !GetInts(env, argv[6], &sb, &rb) ||
      rank == 0 || rank > 8 || ra != rank || rb != rank)
    return Throw(env, "native binary: expected (op 0..2, a, b, out: Float32Array, shape, aStride, bStride: Int32Array of one rank 1..8)");
  long count = 1, lastA = 0, lastB = 0;
  for (size_t d = 0; d < rank; ++d) {
    if (shape[d] <= 0 || sa[d] < 0 || sb[d] < 0) return Throw(env, "native binary: sizes must be positive, strides non-negative");
    count *= shape[d];
    lastA += static_cast<long>(shape[d] - 1) * sa[d];
    lastB += static_cast<long>(shape[d] - 1) * sb[d];
  }
  if (static_cast<size_t>(count) != out.length || lastA >= static_cast<long>(a.length) || lastB >= static_cast<long>(b.length))
    return Throw(env, "native binary: the shape and strides do not fit a (" + std::to_string(a.length) + "), b (" + std::to_string(b.length) + ") and out (" +
                          std::to_string(out.length) + ")");
  const long inner = shape[rank - 1], rows = count / inner;
  std::lock_guard<std::mutex> hold(busy);
  ParallelFor(rows, std::max(1L, kParallelFloats / inner), [&](long r0, long r1) {
    ForRows<2>(shape, rank, {sa, sb}, {0, 0}, r0, r1, [&](long r, const long* at) {
      mdt_binary_row(op, a.data + at[0], sa[rank - 1], b.data + at[1], sb[rank - 1], out.data + r * inner, inner);
    });
  });
  return nullptr;
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int32_t t = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &t) != napi_ok || t < 1 || t > kMaxThreads)
    return Throw(env, "native setThreads: expected an integer from 1 to " + std::to_string(kMaxThreads));
  // Not while another thread (an onnx engine worker's noise) runs on the pool.
  std::lock_guard<std::mutex> hold(busy);
  if (t != pool->Threads()) pool->Resize(t);
  return nullptr;
}

// setIsa('auto' | 'avx2' | 'avx512') → the kernel now in use, or 'none' if the CPU lacks it.
napi_value SetIsa(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  char want[16] = {0};
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], want, sizeof want, &len) != napi_ok)
    return Throw(env, "native setIsa: expected 'auto', 'avx2' or 'avx512'");
  const std::string w(want, len);
  if (w != "auto" && w != "avx2" && w != "avx512") return Throw(env, "native setIsa: expected 'auto', 'avx2' or 'avx512', got '" + w + "'");
  std::lock_guard<std::mutex> hold(busy);
  kernel = nullptr;
  isa = "none";
  if ((w == "auto" || w == "avx512") && CpuHas("avx512")) {
    kernel = &mdt_kernel_avx512;
    isa = "avx512";
  } else if ((w == "auto" || w == "avx2") && CpuHas("avx2")) {
    kernel = &mdt_kernel_avx2;
    isa = "avx2";
  }
  napi_value out;
  NAPI_OK(napi_create_string_utf8(env, isa, NAPI_AUTO_LENGTH, &out));
  return out;
}

napi_value Threads(napi_env env, napi_callback_info) {
  napi_value out;
  NAPI_OK(napi_create_int32(env, pool->Threads(), &out));
  return out;
}

napi_value Init(napi_env env, napi_value exports) {
  {
    std::lock_guard<std::mutex> hold(busy);
    if (pool == nullptr) pool = new Pool();
  }
  const napi_property_descriptor props[] = {
      {"gemm", nullptr, Gemm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"threads", nullptr, Threads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setIsa", nullptr, SetIsa, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gelu", nullptr, Gelu, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"geluGrad", nullptr, GeluGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"lnModulate", nullptr, LnModulate, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"lnModulateGrad", nullptr, LnModulateGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gather", nullptr, Gather, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"segmentSum", nullptr, SegmentSum, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"softmaxBias", nullptr, SoftmaxBias, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attention", nullptr, Attention, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"softmaxGrad", nullptr, SoftmaxGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"sumMiddle", nullptr, SumMiddle, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"adamw", nullptr, AdamW, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"adan", nullptr, Adan, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"ema", nullptr, Ema, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"binary", nullptr, Binary, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"stridedCopy", nullptr, StridedCopy, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"countNonFinite", nullptr, CountNonFinite, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"normal", nullptr, Normal, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  // The functions' signatures, as runtime/native.ts's ADDON_API: a build older than its source is refused, not misread.
  napi_value api;
  NAPI_OK(napi_create_int32(env, kAddonApi, &api));
  NAPI_OK(napi_set_named_property(env, exports, "api", api));
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
