"""Time the PyTorch port of the official code (models.py + diffusion.py) on the CPU, float32.

    /usr/bin/python3 bench/pytorch/bench_step.py [--steps 3] [--threads 2] [--only a,b,c,d]
                                                 [--blas auto|system|DIR] [--out FILE]

Items (batch 8, 32x32x4 latents, patch 2 -> 256 tokens, D 384, 6 heads, depth 12, 1000 classes):
  (a) MDT-S/2 training step as in the official MDT v1 train loop: full-branch + masked-branch
      hybrid losses (same x0 and t, own noise, mask ratio 0.3, label dropout 0.1), summed,
      backward, AdamW(lr 1e-4, wd 0) step, EMA(0.9999) update; decode_layer 2.
  (b) DiT-S/2 training step (one branch), same optimizer and EMA, as in DiT's train.py.
  (c) MDT-S/2 sampling-mode forward (eval, no grad, no masking).
  (d) one block, 256 tokens, batch 8: forward, and forward+backward (MDT block with the
      relative-position bias, and the plain DiT block).
Each item: 1 warm-up run, then the median of --steps runs.

BLAS: Debian's python3-torch calls the system libblas.so.3, which by default is the netlib
*reference* BLAS (~17x slower sgemm here than OpenBLAS). Pip/conda PyTorch ships MKL, so timing
against the reference BLAS would not represent the official setup. With --blas auto (default)
the script re-executes itself with an OpenBLAS directory first on LD_LIBRARY_PATH when the
system alternative is the reference BLAS; the BLAS actually loaded is printed and recorded.

The fixture check (check_fixtures.py) runs first; timings are reported as untrusted if it fails.
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OPENBLAS_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/openblas-openmp",  # libopenblas0-openmp (matches torch's libgomp)
    "/usr/lib/x86_64-linux-gnu/openblas-pthread",
    "/tmp/openblas/root/usr/lib/x86_64-linux-gnu/openblas-openmp",  # `apt-get download` + `dpkg -x`
]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="timed runs per item (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    ap.add_argument("--blas", default="auto", help="auto | system | a directory holding libblas.so.3")
    ap.add_argument("--skip-check", action="store_true", help="do not run the fixture check first")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/pytorch-<date>.json)")
    return ap.parse_args()


def maybe_reexec_with_openblas(choice):
    """Must run before torch is imported: the BLAS is chosen by the dynamic loader."""
    if choice == "system" or os.environ.get("MDT_BENCH_BLAS_DIR") is not None:
        return
    if choice == "auto":
        system_blas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
        if "openblas" in system_blas or "mkl" in system_blas or "blis" in system_blas:
            return  # an optimised BLAS is already the system default
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


ARGS = parse_args()
maybe_reexec_with_openblas(ARGS.blas)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, HERE)
from diffusion import create_diffusion, mdt_training_losses  # noqa: E402
from models import DiTBlock, DiT_S_2, MDTBlock, MDT_S_2  # noqa: E402
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

def timed(fn, steps, warmup):
    """Median wall time of fn() in ms, plus every sample and the phase times fn() returns."""
    for _ in range(warmup):
        fn()
    samples, phases = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        ph = fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if ph:
            phases.append(ph)
    res = {"median_ms": statistics.median(samples), "samples_ms": [round(s, 1) for s in samples]}
    if phases:
        res["phases_median_ms"] = {k: round(statistics.median(p[k] for p in phases), 1) for k in phases[0]}
    return res


class TrainLoop:
    """One official-style training step: losses, backward, AdamW, EMA (no logging work)."""

    def __init__(self, model, diffusion, batch, mdt, seed=0):
        self.model = model.train()  # train mode: label dropout active, as in training
        self.diffusion = diffusion
        self.mdt = mdt
        # both official loops optimise every parameter (frozen DiT pos_embed has no grad)
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
        self.ema = [p.detach().clone() for p in model.parameters()]
        g = torch.Generator().manual_seed(seed)
        self.x0 = torch.randn(batch, 4, 32, 32, generator=g)
        self.y = torch.arange(batch) % 1000

    def step(self):
        t0 = time.perf_counter()
        self.opt.zero_grad()  # torch 1.13 default: zero the grads in place (set_to_none=False)
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


# ---------------------------------------------------------------------------------------------

def main():
    torch.set_num_threads(ARGS.threads)
    only = set(ARGS.only.split(","))
    B, steps, warmup = ARGS.batch, ARGS.steps, ARGS.warmup
    started = datetime.datetime.now()
    info = {
        "what": "PyTorch port of the official DiT / MDT v1 code (bench/pytorch), CPU float32",
        "date": started.isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "blas_loaded": loaded_blas(),
        "blas_dir_forced": os.environ.get("MDT_BENCH_BLAS_DIR"),
        "openblas_config": None,
        "batch": B, "steps": steps, "warmup": warmup,
        "loadavg_start": loadavg(),
    }
    info["openblas_config"] = openblas_config(info["blas_loaded"])
    parallel = torch.__config__.parallel_info()
    print(parallel)
    print("BLAS loaded:", ", ".join(info["blas_loaded"]))
    print("OpenBLAS:", info["openblas_config"])
    print(f"cpu: {info['cpu_model']} x{info['cpu_count']}; torch {torch.__version__}; threads {info['threads']}; "
          f"load average at start {info['loadavg_start']}")
    info["parallel_info"] = parallel

    if not ARGS.skip_check:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            total, fails, worst, _ = check_fixtures.run_all()
        torch.set_num_threads(ARGS.threads)
        info["fixture_check"] = {"cases": total, "failed": fails, "worst_ratio": round(worst, 4)}
        print(f"fixture check: {total - fails}/{total} cases pass (worst err/allowed {worst:.3f})"
              + ("" if not fails else "  -> TIMINGS UNTRUSTED, see check_fixtures.py"))
    torch.manual_seed(0)

    results = {}
    table = []

    def record(key, label, res, per_item=None):
        res["loadavg_after"] = loadavg()
        results[key] = res
        table.append((label, res["median_ms"], res["samples_ms"], per_item))
        print(f"  {label:<52} {res['median_ms']:10.1f} ms  (samples {res['samples_ms']}, "
              f"load {res['loadavg_after'][0]})", flush=True)

    def train_item(key, label, make_model, mdt):
        print(f"{label} ...", flush=True)
        model = make_model()
        loop = TrainLoop(model, create_diffusion(""), B, mdt=mdt)
        r = timed(loop.step, steps, warmup)
        r["params"] = sum(p.numel() for p in model.parameters())
        record(key, label, r)

    if "a" in only:
        train_item("mdt_s2_train_step", f"(a) MDT-S/2 train step b{B} (full+masked, AdamW, EMA)",
                   lambda: MDT_S_2(num_classes=1000, learn_sigma=True, mask_ratio=0.3, decode_layer=2), mdt=True)
    if "b" in only:
        train_item("dit_s2_train_step", f"(b) DiT-S/2 train step b{B} (AdamW, EMA)",
                   lambda: DiT_S_2(num_classes=1000, learn_sigma=True), mdt=False)
    if "c" in only:
        print("(c) MDT-S/2 sampling forward ...", flush=True)
        model = MDT_S_2(num_classes=1000, learn_sigma=True, mask_ratio=0.3, decode_layer=2).eval()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(B, 4, 32, 32, generator=g)
        t = torch.randint(0, 1000, (B,), generator=g)
        y = torch.arange(B) % 1000

        def fwd():
            with torch.no_grad():
                model(x, t, y)

        record("mdt_s2_forward", f"(c) MDT-S/2 forward b{B} (eval, no grad)", timed(fwd, steps, warmup))
        del model
    if "d" in only:
        print("(d) one block, D=384, 256 tokens ...", flush=True)
        torch.manual_seed(0)
        blk = bench_block(MDTBlock(384, 6, num_patches=256), B, steps, warmup, rel_bias=True)
        record("mdt_block_forward", f"(d) MDT block b{B} forward", blk["forward"])
        record("mdt_block_forward_backward", f"(d) MDT block b{B} forward+backward", blk["forward+backward"])
        blk = bench_block(DiTBlock(384, 6), B, steps, warmup, rel_bias=False)
        record("dit_block_forward", f"(d) DiT block b{B} forward", blk["forward"])
        record("dit_block_forward_backward", f"(d) DiT block b{B} forward+backward", blk["forward+backward"])

    info["loadavg_end"] = loadavg()
    info["results"] = results
    info["wall_s"] = round((datetime.datetime.now() - started).total_seconds(), 1)

    print(f"\nmedian of {steps} after {warmup} warm-up; {info['threads']} threads; BLAS "
          f"{os.path.basename(info['blas_loaded'][0]) if info['blas_loaded'] else '?'}"
          f"{' (' + info['blas_dir_forced'] + ')' if info['blas_dir_forced'] else ''}")
    print(f"{'item':<56} {'ms':>10}  {'ms/image':>9}")
    for label, med, _, _ in table:
        print(f"{label:<56} {med:10.1f}  {med / B:9.1f}")
    for key in ("mdt_s2_train_step", "dit_s2_train_step"):
        if key in results and "phases_median_ms" in results[key]:
            print(f"  {key} phases (median ms): {results[key]['phases_median_ms']}")
    print(f"load average: start {info['loadavg_start']}, end {info['loadavg_end']}")

    out = ARGS.out or os.path.join(HERE, "..", "results", f"pytorch-{started.date().isoformat()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(info, f, indent=1)
    print(f"wrote {os.path.normpath(out)}")
    if info.get("fixture_check", {}).get("failed"):
        sys.exit(1)


if __name__ == "__main__":
    main()
