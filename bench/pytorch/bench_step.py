"""Time the PyTorch port of the official code (models.py + diffusion.py) on the CPU, float32.

    python3 bench/pytorch/bench_step.py [--steps 3] [--s2-steps N] [--threads 2] [--only e,f,a,b,c,d]
                                        [--modes eager,compile | --compile] [--sample-runs 1]
                                        [--blas auto|system|DIR] [--out FILE]

Items (the letters of --only):
  (e) the main job's training step (cli/train.ts defaults): DiT on 32x32x1 pixels, patch 4
      (64 tokens), depth 4, D 96, 4 heads, 10 classes, batch 32; AdamW, EMA, as (b). (Records
      before 2026-12-03's second half: the MDT v1 of that size, decode_layer 1, both branches.)
  (f) the main job's sampling, timed end to end: 250 respaced DDPM steps (diffusion.py p_sample)
      of 2 images with classifier-free guidance at a constant w (--cfg-scale, 4), i.e. 4 rows with
      the null-label half, through the official forward_with_cfg (DiT's constant-w form; on 1 channel
      the one eps channel is guided).
  (a) MDT-S/2 training step (batch --batch, 8; 32x32x4 latents, patch 2 -> 256 tokens, D 384, 6
      heads, depth 12, 1000 classes) as in the official MDT v1 train loop: full-branch +
      masked-branch hybrid losses (same x0 and t, own noise, mask ratio 0.3, label dropout 0.1),
      summed, backward, AdamW(lr 1e-4, wd 0) step, EMA(0.9999) update; decode_layer 2.
  (b) DiT-S/2 training step (one branch), same optimizer and EMA, as in DiT's train.py.
  (c) MDT-S/2 sampling-mode forward (eval, no grad, no masking).
  (d) one block, 256 tokens, batch 8: forward, and forward+backward (MDT block with the
      relative-position bias, and the plain DiT block). Eager only.
Each item: --warmup warm-up runs, then the median of --steps runs (--s2-steps for a-d, --sample-runs
for f; f warms up on its first 10 steps). --modes eager,compile (or --compile) also times every item
but (d) with the model under torch.compile (nn.Module.compile(), default mode), after at least 2
warm-up runs (the first compiles); a compile that fails records its error string instead of a number.

BLAS: pip and conda PyTorch carry their own BLAS (MKL) inside libtorch_cpu, and are used as they
are. Debian's python3-torch instead calls the system libblas.so.3, which by default is the netlib
*reference* BLAS (~17x slower sgemm here than OpenBLAS), which would not represent the official
setup. With --blas auto (default) the script reads the ELF dependencies of the torch it is about
to import and, only when they include libblas.so.3 and the system alternative is the reference
BLAS, re-executes itself with an OpenBLAS directory first on LD_LIBRARY_PATH. The BLAS actually
loaded is printed and recorded. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the
environment first (they force an older kernel).

The fixture check (check_fixtures.py) runs first; timings are reported as untrusted if it fails.
"""
import argparse
import contextlib
import datetime
import glob
import importlib.util
import io
import json
import os
import platform
import re
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OPENBLAS_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/openblas-openmp",  # libopenblas0-openmp (matches torch's libgomp)
    "/usr/lib/x86_64-linux-gnu/openblas-pthread",
    "/tmp/openblas/root/usr/lib/x86_64-linux-gnu/openblas-openmp",  # `apt-get download` + `dpkg -x`
]
# Variables that make OpenBLAS pick an older kernel or cache blocking: never let them in.
OPENBLAS_FORCING_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ALL_ITEMS = "e,f,a,b,c,d"
EXIT_NO_TORCH = 3


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="timed runs per item (median reported)")
    ap.add_argument("--s2-steps", type=int, default=None, help="timed runs of the S/2 items a-d (default --steps)")
    ap.add_argument("--sample-runs", type=int, default=1, help="timed 250-step sampling runs of item f")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="batch of the S/2 items a-d")
    ap.add_argument("--main-batch", type=int, default=32, help="batch of the main-job training step (e)")
    ap.add_argument("--sample-steps", type=int, default=250, help="respaced DDPM steps of item f")
    ap.add_argument("--sample-images", type=int, default=2, help="images of item f (CFG doubles the rows)")
    ap.add_argument("--cfg-scale", type=float, default=4.0, help="constant guidance scale of item f")
    ap.add_argument("--only", default=ALL_ITEMS, help=f"comma-separated subset of {ALL_ITEMS}")
    ap.add_argument("--modes", default="eager", help="comma-separated subset of eager,compile")
    ap.add_argument("--compile", action="store_true", help="same as --modes eager,compile")
    ap.add_argument("--blas", default="auto", help="auto | system | a directory holding libblas.so.3")
    ap.add_argument("--skip-check", action="store_true", help="do not run the fixture check first")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/pytorch-<date>.json)")
    args = ap.parse_args()
    if args.compile:
        args.modes = "eager,compile"
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("eager", "compile")]
    if bad or not modes:
        ap.error(f"--modes: expected eager and/or compile, got {args.modes!r}")
    args.modes = modes
    items = [i.strip() for i in args.only.split(",") if i.strip()]
    bad = [i for i in items if i not in ALL_ITEMS.split(",")]
    if bad:
        ap.error(f"--only: unknown item(s) {','.join(bad)}; expected a subset of {ALL_ITEMS}")
    args.only = set(items)
    if args.s2_steps is None:
        args.s2_steps = args.steps
    return args


def elf_needed(path):
    """DT_NEEDED names of an ELF64 little-endian shared object, read without loading it."""
    with open(path, "rb") as f:
        hdr = f.read(64)
        if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2 or hdr[5] != 1:
            return []
        (phoff,) = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
        loads, dyn = [], None
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", ph, i * phentsize)
            if p_type == 1:  # PT_LOAD
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == 2:  # PT_DYNAMIC
                dyn = (p_offset, p_filesz)
        if dyn is None:
            return []
        f.seek(dyn[0])
        d = f.read(dyn[1])
        needed, strtab = [], None
        for i in range(0, len(d) - 15, 16):
            tag, val = struct.unpack_from("<qQ", d, i)
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED
                needed.append(val)
            elif tag == 5:  # DT_STRTAB (an address)
                strtab = val
        base = next((off + strtab - va for va, off, size in loads if strtab is not None and va <= strtab < va + size), None)
        if base is None:
            return []
        names = []
        for n in needed:
            f.seek(base + n)
            names.append(f.read(256).split(b"\0", 1)[0].decode("utf-8", "replace"))
        return names


def torch_blas_linkage():
    """How the torch that `import torch` would load gets its BLAS, found without importing it:
    'system' when its libraries link libblas.so.3 (Debian's python3-torch), 'bundled' when not
    (pip/conda wheels: MKL or OpenBLAS inside libtorch_cpu), None when torch is not found or its
    libraries cannot be read."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = list(spec.submodule_search_locations)[0]
    roots = glob.glob(os.path.join(pkg, "_C*.so"))
    if not roots:
        return None
    search = [os.path.join(pkg, "lib"), os.path.dirname(roots[0]), "/usr/lib/x86_64-linux-gnu",
              "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"]
    seen, todo = set(), [roots[0]]
    while todo:
        try:
            names = elf_needed(todo.pop())
        except (OSError, struct.error):
            return None
        for n in names:
            if n.startswith(("libblas.so", "libcblas.so")):
                return "system"
            # only torch's own libraries are followed: the system ones do not pull a BLAS in
            if n in seen or not n.startswith(("libtorch", "libc10", "libshm", "libcaffe2")):
                continue
            seen.add(n)
            path = next((os.path.join(d, n) for d in search if os.path.isfile(os.path.join(d, n))), None)
            if path is not None:
                todo.append(path)
    return "bundled"


def maybe_reexec_with_openblas(choice):
    """Must run before torch is imported: the BLAS is chosen by the dynamic loader.
    Returns why the BLAS is what it is (recorded with the timings)."""
    if os.environ.get("MDT_BENCH_BLAS_DIR") is not None:
        return f"re-executed with {os.environ['MDT_BENCH_BLAS_DIR']} first on LD_LIBRARY_PATH"
    if choice == "system":
        return "--blas system: whatever torch links"
    if choice == "auto":
        linkage = torch_blas_linkage()
        if linkage is None:
            return "torch not found (or its libraries unreadable): nothing to decide"
        if linkage == "bundled":
            return "torch carries its own BLAS (does not link libblas.so.3): used as is"
        system_blas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
        if "openblas" in system_blas or "mkl" in system_blas or "blis" in system_blas:
            return f"torch links libblas.so.3, and the system alternative is optimised ({system_blas})"
        dirs = OPENBLAS_CANDIDATES
    else:
        dirs = [choice]
    for d in dirs:
        if os.path.isfile(os.path.join(d, "libblas.so.3")):
            env = dict(os.environ)
            env["LD_LIBRARY_PATH"] = d + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
            env["MDT_BENCH_BLAS_DIR"] = d
            os.execve(sys.executable, [sys.executable] + sys.argv, env)
    if choice != "auto":
        sys.exit(f"--blas {choice}: no libblas.so.3 there")
    print("WARNING: system BLAS is the reference implementation and no OpenBLAS was found; "
          "install libopenblas0-openmp for representative numbers", file=sys.stderr)
    return "torch links libblas.so.3, the system one is the reference BLAS, and no OpenBLAS was found"


ARGS = parse_args()
UNSET_ENV = [k for k in OPENBLAS_FORCING_ENV if os.environ.pop(k, None) is not None]
BLAS_DECISION = maybe_reexec_with_openblas(ARGS.blas)

try:
    import numpy as np  # noqa: E402
    import torch  # noqa: E402
except ImportError as e:
    print(f"bench_step.py: torch is not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(EXIT_NO_TORCH)

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, HERE)
from diffusion import create_diffusion, mdt_training_losses  # noqa: E402
from models import DiT, DiTBlock, DiT_S_2, MDTBlock, MDT_S_2  # noqa: E402
import check_fixtures  # noqa: E402


# ---------------------------------------------------------------------------------------------
# environment facts recorded next to the numbers
# ---------------------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loaded_blas():
    """Which BLAS/LAPACK shared objects the process really mapped (after a matmul)."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            name = os.path.basename(path)
            if any(k in name for k in ("blas", "lapack", "mkl", "dnnl", "gomp")):
                libs.add(os.path.realpath(path))
    return sorted(libs)


def torch_build_blas():
    """BLAS_INFO of torch's build configuration (mkl for pip wheels, which link MKL statically)."""
    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return m.group(1) if m else None


def openblas_config(libs):
    """OpenBLAS build/kernel string (e.g. which SIMD kernels it picked for this CPU), if loaded."""
    import ctypes
    for path in libs:
        if "openblas" in os.path.basename(path):
            try:
                lib = ctypes.CDLL(path)
                lib.openblas_get_config.restype = ctypes.c_char_p
                lib.openblas_get_corename.restype = ctypes.c_char_p
                return f"{lib.openblas_get_config().decode()} (core {lib.openblas_get_corename().decode()})"
            except (OSError, AttributeError):
                return None
    return None


def loadavg():
    return [round(v, 2) for v in os.getloadavg()]


# ---------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------

def timed(fn, steps, warmup, warm_fn=None):
    """Median wall time of fn() in ms, plus every sample, the warm-up times and the phase times
    fn() returns. Warm-up runs warm_fn (default fn)."""
    warm = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        (warm_fn or fn)()
        warm.append(round((time.perf_counter() - t0) * 1e3, 1))
    samples, phases = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        ph = fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if ph:
            phases.append(ph)
    res = {"median_ms": statistics.median(samples), "samples_ms": [round(s, 1) for s in samples], "warmup_ms": warm}
    if phases:
        res["phases_median_ms"] = {k: round(statistics.median(p[k] for p in phases), 1) for k in phases[0]}
    return res


def prepare(model, mode):
    """The model as the item runs it: eager, or its forward under torch.compile (default mode)."""
    if mode == "compile":
        torch._dynamo.reset()  # fresh caches and recompile budget per item (the forward code is shared)
        model.compile()
    return model


class TrainLoop:
    """One official-style training step: losses, backward, AdamW, EMA (no logging work)."""

    def __init__(self, model, diffusion, batch, mdt, in_channels=4, input_size=32, num_classes=1000, seed=0):
        self.model = model.train()  # train mode: label dropout active, as in training
        self.diffusion = diffusion
        self.mdt = mdt
        # both official loops optimise every parameter (frozen DiT pos_embed has no grad)
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
        self.ema = [p.detach().clone() for p in model.parameters()]
        g = torch.Generator().manual_seed(seed)
        self.x0 = torch.randn(batch, in_channels, input_size, input_size, generator=g)
        self.y = torch.arange(batch) % num_classes

    def step(self):
        t0 = time.perf_counter()
        self.opt.zero_grad()  # the installed torch's default (torch >= 2: set_to_none=True)
        t = torch.randint(0, self.diffusion.num_timesteps, (self.x0.shape[0],))
        if self.mdt:
            # the full branch's graph is kept while the masked branch runs, as in train_util
            loss, _, _ = mdt_training_losses(self.diffusion, self.model, self.x0, t, self.y)
        else:
            loss = self.diffusion.training_losses(self.model, self.x0, t, model_kwargs={"y": self.y})["loss"].mean()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.opt.step()
        t3 = time.perf_counter()
        with torch.no_grad():
            for targ, src in zip(self.ema, self.model.parameters()):
                targ.mul_(0.9999).add_(src, alpha=1 - 0.9999)
        t4 = time.perf_counter()
        assert torch.isfinite(loss)
        return {"forward+loss": (t1 - t0) * 1e3, "backward": (t2 - t1) * 1e3,
                "adamw": (t3 - t2) * 1e3, "ema": (t4 - t3) * 1e3}


def forward_with_cfg(model, x, t, y, cfg_scale):
    """The official forward_with_cfg with a constant scale (DiT's form; MDT's adds a w_t schedule,
    which costs the same): both halves run the first half's input, [labels; null]. The official code
    guides 3 of 4 latent channels; a model with fewer channels has all its eps channels guided
    (the project's guideChannels 'all'), never the variance channels."""
    half = x[: len(x) // 2]
    combined = torch.cat([half, half], dim=0)
    model_out = model(combined, t, y)
    g = 3 if x.shape[1] >= 3 else x.shape[1]
    eps, rest = model_out[:, :g], model_out[:, g:]
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
    eps = torch.cat([half_eps, half_eps], dim=0)
    return torch.cat([eps, rest], dim=1)


class SampleLoop:
    """DiT's sample.py / p_sample_loop: z for n images doubled, labels [y; null], every respaced
    DDPM step (diffusion.p_sample, no clipping) through forward_with_cfg; returns the n samples."""

    def __init__(self, model, steps, n, cfg_scale, in_channels, input_size, num_classes, seed=1):
        self.model = model.eval()
        self.diffusion = create_diffusion(str(steps))
        self.shape = (n, in_channels, input_size, input_size)
        self.y = torch.tensor([i % num_classes for i in range(n)] + [num_classes] * n)
        self.cfg_scale = cfg_scale
        self.gen = torch.Generator().manual_seed(seed)

    def run(self, limit=None):
        n = self.shape[0]
        z = torch.randn(*self.shape, generator=self.gen)
        x = torch.cat([z, z], 0)
        fn = lambda x_, t_, y: forward_with_cfg(self.model, x_, t_, y, self.cfg_scale)  # noqa: E731
        indices = list(range(self.diffusion.num_timesteps))[::-1][:limit]
        with torch.no_grad():
            for i in indices:
                t = torch.tensor([i] * x.shape[0])
                x = self.diffusion.p_sample(fn, x, t, model_kwargs={"y": self.y})["sample"]
        out = x[:n]
        assert torch.isfinite(out).all()
        return None


def bench_block(block, batch, steps, warmup, rel_bias):
    D, L = 384, 256
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, L, D, generator=g)
    c = torch.randn(batch, D, generator=g)
    # the official adaLN-Zero init zeroes the modulation, which would make the block the identity
    torch.nn.init.normal_(block.adaLN_modulation[1].weight, std=0.02)
    torch.nn.init.normal_(block.adaLN_modulation[1].bias, std=0.5)
    if rel_bias:
        torch.nn.init.normal_(block.attn.rel_pos_bias.relative_position_bias_table, std=0.02)

    def fwd():
        with torch.no_grad():
            block(x, c)

    xg = x.clone().requires_grad_(True)
    cg = c.clone().requires_grad_(True)
    gy = torch.randn(batch, L, D, generator=g)

    def fwd_bwd():
        block.zero_grad()
        xg.grad = cg.grad = None
        block(xg, cg).backward(gy)

    return {"forward": timed(fwd, steps, warmup), "forward+backward": timed(fwd_bwd, steps, warmup)}


# the main job (cli/train.ts TRAIN_DEFAULTS): a DiT on Fashion-MNIST padded to 32x32
MAIN_JOB = dict(input_size=32, patch_size=4, in_channels=1, hidden_size=96, depth=4, num_heads=4,
                num_classes=10, learn_sigma=True)


def main_job_model():
    return DiT(**MAIN_JOB)


# ---------------------------------------------------------------------------------------------

def main():
    torch.set_num_threads(ARGS.threads)
    only = ARGS.only
    B, warmup = ARGS.batch, ARGS.warmup
    started = datetime.datetime.now()
    info = {
        "what": "PyTorch port of the official DiT / MDT v1 code (bench/pytorch), CPU float32",
        "date": started.isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "blas_build": torch_build_blas(),
        "blas_decision": BLAS_DECISION,
        "blas_loaded": loaded_blas(),
        "blas_dir_forced": os.environ.get("MDT_BENCH_BLAS_DIR"),
        "env_unset": UNSET_ENV,
        "openblas_config": None,
        "batch": B, "main_batch": ARGS.main_batch, "steps": ARGS.steps, "s2_steps": ARGS.s2_steps,
        "sample": {"steps": ARGS.sample_steps, "images": ARGS.sample_images, "rows": 2 * ARGS.sample_images,
                   "cfg_scale": ARGS.cfg_scale, "runs": ARGS.sample_runs},
        "warmup": warmup, "modes": ARGS.modes, "items": sorted(only),
        "compile": {"api": "nn.Module.compile() (torch.compile of the model's forward)", "mode": "default",
                    "backend": "inductor", "warmup_min": 2},
        "loadavg_start": loadavg(),
    }
    info["openblas_config"] = openblas_config(info["blas_loaded"])
    parallel = torch.__config__.parallel_info()
    print(parallel)
    print(f"BLAS: build {info['blas_build']}; {BLAS_DECISION}; loaded: {', '.join(info['blas_loaded']) or '(none mapped)'}")
    if info["openblas_config"]:
        print("OpenBLAS:", info["openblas_config"])
    if UNSET_ENV:
        print(f"unset {', '.join(UNSET_ENV)} (they force an older OpenBLAS kernel)")
    print(f"cpu: {info['cpu_model']} x{info['cpu_count']}; torch {torch.__version__}; threads {info['threads']}; "
          f"load average at start {info['loadavg_start']}")
    info["parallel_info"] = parallel

    if not ARGS.skip_check:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            total, fails, worst, dirs = check_fixtures.run_all()
        torch.set_num_threads(ARGS.threads)
        if not dirs:
            fails = max(fails, 1)
        info["fixture_check"] = {"cases": total, "failed": fails, "worst_ratio": round(worst, 4), "fixtures": dirs}
        print(f"fixture check: {total - fails}/{total} cases pass in {len(dirs)} fixtures (worst err/allowed {worst:.3f})"
              + ("" if not fails else "  -> TIMINGS UNTRUSTED, see check_fixtures.py"), flush=True)
    torch.manual_seed(0)

    # results[key] are eager timings (the keys earlier records used); results_compile[key] the
    # same item with the model under torch.compile, or {"error": ...}.
    results, results_compile = {}, {}
    table = []

    def record(key, label, res, mode="eager", per=1):
        res["loadavg_after"] = loadavg()
        (results if mode == "eager" else results_compile)[key] = res
        lab = label if mode == "eager" else f"{label} [compile]"
        table.append((lab, res["median_ms"], per))
        print(f"  {lab:<64} {res['median_ms']:10.1f} ms  (samples {res['samples_ms']}, warm-up {res['warmup_ms']}, "
              f"load {res['loadavg_after'][0]})", flush=True)

    def record_error(key, label, err):
        msg = f"{type(err).__name__}: {err}".strip()
        if len(msg) > 2000:
            msg = msg[:2000] + " …"
        results_compile[key] = {"error": msg, "loadavg_after": loadavg()}
        table.append((f"{label} [compile]", None, 1))
        print(f"  {label} [compile]: torch.compile FAILED: {msg.splitlines()[0] if msg else '?'}", flush=True)

    def run_modes(key, label, bench, per=1):
        """bench(mode) -> result dict; a failing compiled run records its error string."""
        for mode in ARGS.modes:
            print(f"{label}{'' if mode == 'eager' else ' [compile]'} ...", flush=True)
            torch.manual_seed(0)
            if mode == "eager":
                record(key, label, bench(mode), mode, per)
                continue
            try:
                record(key, label, bench(mode), mode, per)
            except Exception as e:  # noqa: BLE001 - any compile/runtime failure is the answer
                record_error(key, label, e)
            finally:
                torch._dynamo.reset()

    def train_bench(make_model, mdt, batch, steps, **data):
        def bench(mode):
            model = prepare(make_model(), mode)
            loop = TrainLoop(model, create_diffusion(""), batch, mdt=mdt, **data)
            r = timed(loop.step, steps, warmup if mode == "eager" else max(warmup, 2))
            r["params"] = sum(p.numel() for p in model.parameters())
            return r
        return bench

    if "e" in only:
        run_modes("main_train_step", f"(e) main-job DiT d4 D96 p4 train step b{ARGS.main_batch}",
                  train_bench(main_job_model, False, ARGS.main_batch, ARGS.steps, in_channels=1, num_classes=10))
    if "f" in only:
        def sample_bench(mode):
            loop = SampleLoop(prepare(main_job_model(), mode), ARGS.sample_steps, ARGS.sample_images, ARGS.cfg_scale,
                              in_channels=1, input_size=32, num_classes=10)
            # warm-up: the loop's first 10 steps (the first call compiles, under compile)
            w = max(warmup, 1) if mode == "eager" else max(warmup, 2)
            r = timed(loop.run, ARGS.sample_runs, w, warm_fn=lambda: loop.run(limit=10))
            r["per_step_ms"] = r["median_ms"] / ARGS.sample_steps
            return r
        run_modes("main_sample_250" if ARGS.sample_steps == 250 else f"main_sample_{ARGS.sample_steps}",
                  f"(f) main-job {ARGS.sample_steps}-step DDPM, CFG w={ARGS.cfg_scale:g}, {ARGS.sample_images} images", sample_bench)
    if "a" in only:
        run_modes("mdt_s2_train_step", f"(a) MDT-S/2 train step b{B} (full+masked, AdamW, EMA)",
                  train_bench(lambda: MDT_S_2(num_classes=1000, learn_sigma=True, mask_ratio=0.3, decode_layer=2),
                              True, B, ARGS.s2_steps), per=B)
    if "b" in only:
        run_modes("dit_s2_train_step", f"(b) DiT-S/2 train step b{B} (AdamW, EMA)",
                  train_bench(lambda: DiT_S_2(num_classes=1000, learn_sigma=True), False, B, ARGS.s2_steps), per=B)
    if "c" in only:
        def fwd_bench(mode):
            model = prepare(MDT_S_2(num_classes=1000, learn_sigma=True, mask_ratio=0.3, decode_layer=2).eval(), mode)
            g = torch.Generator().manual_seed(1)
            x = torch.randn(B, 4, 32, 32, generator=g)
            t = torch.randint(0, 1000, (B,), generator=g)
            y = torch.arange(B) % 1000

            def fwd():
                with torch.no_grad():
                    model(x, t, y)
            return timed(fwd, ARGS.s2_steps, warmup if mode == "eager" else max(warmup, 2))
        run_modes("mdt_s2_forward", f"(c) MDT-S/2 forward b{B} (eval, no grad)", fwd_bench, per=B)
    if "d" in only:
        print("(d) one block, D=384, 256 tokens ...", flush=True)
        torch.manual_seed(0)
        steps = ARGS.s2_steps
        blk = bench_block(MDTBlock(384, 6, num_patches=256), B, steps, warmup, rel_bias=True)
        record("mdt_block_forward", f"(d) MDT block b{B} forward", blk["forward"], per=B)
        record("mdt_block_forward_backward", f"(d) MDT block b{B} forward+backward", blk["forward+backward"], per=B)
        blk = bench_block(DiTBlock(384, 6), B, steps, warmup, rel_bias=False)
        record("dit_block_forward", f"(d) DiT block b{B} forward", blk["forward"], per=B)
        record("dit_block_forward_backward", f"(d) DiT block b{B} forward+backward", blk["forward+backward"], per=B)

    info["loadavg_end"] = loadavg()
    info["results"] = results
    info["results_compile"] = results_compile
    info["wall_s"] = round((datetime.datetime.now() - started).total_seconds(), 1)

    print(f"\nmedians after {warmup} warm-up (compile: at least 2); {info['threads']} threads; BLAS "
          f"{info['blas_build']}{' (' + info['blas_dir_forced'] + ')' if info['blas_dir_forced'] else ''}")
    print(f"{'item':<74} {'ms':>10}  {'ms/image':>9}")
    for label, med, per in table:
        print(f"{label:<74} {'failed' if med is None else f'{med:.1f}':>10}  "
              f"{'' if med is None or per == 1 else f'{med / per:.1f}':>9}")
    for res, tag in ((results, ""), (results_compile, " [compile]")):
        for key in ("main_train_step", "mdt_s2_train_step", "dit_s2_train_step"):
            if key in res and "phases_median_ms" in res[key]:
                print(f"  {key}{tag} phases (median ms): {res[key]['phases_median_ms']}")
    print(f"load average: start {info['loadavg_start']}, end {info['loadavg_end']}; {info['wall_s']} s")

    out = ARGS.out or os.path.join(HERE, "..", "results", f"pytorch-{started.date().isoformat()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(info, f, indent=1)
    print(f"wrote {os.path.normpath(out)}")
    if info.get("fixture_check", {}).get("failed"):
        sys.exit(1)


if __name__ == "__main__":
    main()
