"""Check the PyTorch port (models.py, diffusion.py) against the golden fixtures of the official code.

    /usr/bin/python3 bench/pytorch/check_fixtures.py [--fixtures DIR] [--only mdt-v1-tiny,...] [-v]

Every case of every fixture directory is run (all kinds in FORMAT.md §9), outputs AND the
official intermediates are compared with FORMAT.md §5's rule
    max|A - E| <= atol + rtol * max|E|      (int64 tensors: exact)
Prints one PASS/FAIL line per case with the worst err/allowed ratio; exits 1 on any failure.
The timings in bench_step.py are only meaningful while this passes.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusion import create_diffusion, space_timesteps, linear_betas  # noqa: E402
from models import DiT, MDT, MDTv2, TimestepEmbedder, get_2d_sincos_pos_embed  # noqa: E402

DEFAULT_FIXTURES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "..", "..", "..", "shared", "fixtures"))
_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """Minimal safetensors reader: u64 LE header length, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        arr = np.frombuffer(buf, dtype=np.dtype(_DTYPES[meta["dtype"]]).newbyteorder("<"),
                            count=(end - begin) // np.dtype(_DTYPES[meta["dtype"]]).itemsize, offset=base + begin)
        out[name] = torch.from_numpy(arr.reshape(meta["shape"]).copy())
    return out


def build_model(cfg):
    kw = dict(input_size=cfg["input_size"], patch_size=cfg["patch_size"], in_channels=cfg["in_channels"],
              hidden_size=cfg["hidden_size"], depth=cfg["depth"], num_heads=cfg["num_heads"],
              mlp_ratio=cfg["mlp_ratio"], class_dropout_prob=cfg["class_dropout_prob"],
              num_classes=cfg["num_classes"], learn_sigma=cfg["learn_sigma"])
    v = cfg["variant"]
    if v == "dit":
        return DiT(**kw)
    cls = MDT if v == "mdt-v1" else MDTv2
    return cls(mask_ratio=cfg["mask_ratio"], decode_layer=cfg["decode_layer"], **kw)


class Capture:
    """Forward hooks that record the official intermediates (names as in cases.json)."""

    def __init__(self, model):
        self.acts = {}
        self.handles = []
        for name in ("x_embedder", "t_embedder", "y_embedder", "final_layer"):
            self._hook(getattr(model, name), name + "_out")
        for name, mod in model.named_modules():
            if name.count(".") == 1 and name.split(".")[0] in (
                    "blocks", "sideblocks", "en_inblocks", "en_outblocks", "de_blocks"):
                self._hook(mod, "block_out/" + name)
        if hasattr(model, "forward_side_interpolater"):
            orig = model.forward_side_interpolater

            def side(*a, **k):
                r = orig(*a, **k)
                self.acts["side_interpolater_out"] = r
                return r

            model.forward_side_interpolater = side
            self.restore = lambda: model.__dict__.pop("forward_side_interpolater", None)
        else:
            self.restore = lambda: None
        if hasattr(model, "random_masking"):
            orig_rm = model.random_masking

            def rm(x, ratio, ids_shuffle=None):
                r = orig_rm(x, ratio, ids_shuffle)
                self.acts["ids_restore"], self.acts["ids_keep"] = r[2], r[3]
                self.acts["len_keep"] = torch.tensor([r[3].shape[1]])
                self.acts["mask_ratio_used"] = torch.as_tensor(ratio, dtype=torch.float32).reshape(1)
                self.acts["mask"] = r[1]
                return r

            model.random_masking = rm
            prev = self.restore
            self.restore = lambda: (prev(), model.__dict__.pop("random_masking", None))

    def _hook(self, mod, key):
        self.handles.append(mod.register_forward_hook(lambda m, i, o: self.acts.__setitem__(key, o)))

    def close(self):
        for h in self.handles:
            h.remove()
        self.restore()


def compare(actual, expected, rtol, atol):
    """Return (ok, worst |err|, allowed, ratio)."""
    a = torch.as_tensor(actual).detach()
    e = expected
    if tuple(a.shape) != tuple(e.shape):
        if a.numel() == e.numel():
            a = a.reshape(e.shape)
        else:
            return False, float("inf"), 0.0, float("inf")
    if e.dtype in (torch.int64, torch.int32):
        err = (a.to(torch.int64) - e.to(torch.int64)).abs().max().item() if e.numel() else 0
        return err == 0, float(err), 0.0, 0.0 if err == 0 else float("inf")
    a64, e64 = a.double(), e.double()
    err = (a64 - e64).abs().max().item() if e.numel() else 0.0
    allowed = atol + rtol * (e64.abs().max().item() if e.numel() else 0.0)
    ratio = err / allowed if allowed > 0 else (0.0 if err == 0 else float("inf"))
    return err <= allowed, err, allowed, ratio


def run_case(case, model, cfg, T):
    """Compute this case's outputs and intermediates; returns {name: tensor}."""
    kind = case["kind"]
    inp = {k: (T[v] if isinstance(v, str) else v) for k, v in case["inputs"].items()}
    params = case.get("params") or {}
    v = cfg["variant"]
    res = {}
    with torch.no_grad():
        if kind == "timestep_embedding":
            t = inp["t"]
            half = 128
            res["freqs"] = torch.exp(-np.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
            res["sinusoid"] = TimestepEmbedder.timestep_embedding(t, 256)
            res["t_emb"] = model.t_embedder(t)
        elif kind == "pos_embed":
            pe = get_2d_sincos_pos_embed(cfg["hidden_size"], cfg["grid_size"])
            res["sincos_f64"] = torch.from_numpy(pe)
            res["sincos"] = torch.from_numpy(pe).float()
        elif kind == "rel_pos_index":
            blk = (model.blocks if v == "mdt-v1" else model.en_inblocks)[0]
            res["relative_position_index"] = blk.attn.rel_pos_bias.relative_position_index
            res["bias_first_block"] = blk.attn.rel_pos_bias()
        elif kind == "block":
            blk = model.get_submodule(params["module"])
            kw = {}
            if "skip" in inp:
                kw["skip"] = inp["skip"]
            if "ids_keep" in inp:
                kw["ids_keep"] = inp["ids_keep"]
            res["out"] = blk(inp["x"], inp["c"], **kw)
        elif kind in ("forward", "forward_masked"):
            cap = Capture(model)
            try:
                kw = {}
                if kind == "forward_masked":
                    kw = {"enable_mask": True, "ids_shuffle": inp["ids_shuffle"]}
                    if v == "mdt-v2":
                        kw["mask_ratio_u"] = inp["mask_ratio_u"]
                res["out"] = model(inp["x"], inp["t"], inp["y"], **kw)
            finally:
                cap.close()
            res.update(cap.acts)
        elif kind == "forward_cfg":
            if v == "dit":
                res["out"] = model.forward_with_cfg(inp["x"], inp["t"], inp["y"], inp["cfg_scale"])
            else:
                res["out"] = model.forward_with_cfg(inp["x"], inp["t"], inp["y"], cfg_scale=inp["cfg_scale"],
                                                    diffusion_steps=inp["diffusion_steps"], scale_pow=inp["scale_pow"])
        elif kind == "cfg_weights":
            # Same trick as the fixture generator: stub forward so cond eps = 1, uncond eps = 0.
            t = inp["t"]
            n = t.shape[0]

            def stub(x, tt, y):
                o = torch.zeros(2 * n, cfg["out_channels"], 1, 1)
                o[:n, :3] = 1.0
                return o

            model.forward = stub
            try:
                out = model.forward_with_cfg(torch.zeros(2 * n, 1, 1, 1), torch.cat([t, t]), None,
                                             cfg_scale=inp["cfg_scale"], diffusion_steps=inp["diffusion_steps"],
                                             scale_pow=inp["scale_pow"])
            finally:
                del model.forward
            res["w_t"] = out[:n, 0, 0, 0]
        elif kind == "training_losses":
            gamma = cfg["diffusion"].get("min_snr_gamma") if cfg["diffusion"].get("min_snr_weight") else None
            diff = create_diffusion("", min_snr_gamma=gamma)
            x0, t, y = inp["x0"], inp["t"], inp["y"]
            full = diff.training_losses(model, x0, t, model_kwargs={"y": y}, noise=inp["noise"])
            res.update(mse=full["mse"], vb=full["vb"], loss=full["loss"], x_t=full["x_t"], model_out=full["model_out"])
            total = full["loss"].mean()
            if "mse_weight" in full:
                res["mse_weight"] = full["mse_weight"]
            if v != "dit":
                cap = Capture(model)
                try:
                    kw = {"y": y, "enable_mask": True, "ids_shuffle": inp["ids_shuffle"]}
                    if v == "mdt-v2":
                        kw["mask_ratio_u"] = inp["mask_ratio_u"]
                    m = diff.training_losses(model, x0, t, model_kwargs=kw, noise=inp["noise_masked"])
                finally:
                    cap.close()
                res.update(m_mse=m["mse"], m_vb=m["vb"], m_loss=m["loss"], x_t_masked=m["x_t"],
                           model_out_masked=m["model_out"], mask=cap.acts["mask"], len_keep=cap.acts["len_keep"])
                total = total + m["loss"].mean()
            res["total"] = total.reshape(1)
        elif kind == "min_snr_weights":
            diff = create_diffusion("", min_snr_gamma=cfg["diffusion"]["min_snr_gamma"])
            res["mse_weight"] = diff.mse_weight(inp["t"], None)
        elif kind == "schedule":
            diff = create_diffusion(params["timestep_respacing"])
            res["timestep_map"] = torch.tensor(diff.timestep_map, dtype=torch.int64)
            for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                         "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                         "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                         "posterior_mean_coef1", "posterior_mean_coef2"):
                arr = torch.from_numpy(getattr(diff, name))
                res[name + "_f64"] = arr
                res[name] = arr.float()
            res["betas_linspace_f64"] = torch.from_numpy(linear_betas(1000))
        elif kind in ("p_sample_step", "ddim_step"):
            diff = create_diffusion(params["timestep_respacing"])
            k = inp["k"]
            if "cfg_scale" in inp:
                if v == "dit":
                    fn = model.forward_with_cfg
                    mk = {"y": inp["y"], "cfg_scale": inp["cfg_scale"]}
                else:
                    fn = model.forward_with_cfg
                    mk = {"y": inp["y"], "cfg_scale": inp["cfg_scale"], "diffusion_steps": inp["diffusion_steps"],
                          "scale_pow": inp["scale_pow"]}
            else:
                fn, mk = model, {"y": inp["y"]}
            seen_t = {}

            def model_fn(x, tt, **kw):
                seen_t["t"] = tt
                return fn(x, tt, **kw)

            if kind == "p_sample_step":
                out = diff.p_sample(model_fn, inp["x_t"], k, model_kwargs=mk, noise=inp["noise"])
                res.update(x_prev=out["sample"], mean=out["mean"], log_variance=out["log_variance"])
            else:
                out = diff.ddim_sample(model_fn, inp["x_t"], k, model_kwargs=mk, eta=0.0, noise=inp["noise"])
                res["x_prev"] = out["sample"]
            res.update(pred_xstart=out["pred_xstart"], model_output=out["model_output"], t_orig=seen_t["t"])
        elif kind == "q_sample":
            diff = create_diffusion("")
            res["x_t"] = diff.q_sample(inp["x0"], inp["t"], inp["noise"])
        else:
            raise NotImplementedError(kind)
    return res


def check_fixture(fdir, verbose):
    cfg = json.load(open(os.path.join(fdir, "config.json")))
    cases = json.load(open(os.path.join(fdir, "cases.json")))
    weights = read_safetensors(os.path.join(fdir, "weights.safetensors"))
    T = read_safetensors(os.path.join(fdir, "cases.safetensors"))
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg)
    model.load_state_dict(weights, strict=True)  # proves the key names and shapes are the official ones
    model.eval()  # fixtures: no label dropout
    nparams = sum(p.numel() for p in model.parameters())
    assert nparams == cfg["num_parameters"], (nparams, cfg["num_parameters"])
    name = os.path.basename(fdir.rstrip("/"))
    print(f"== {name} ({cfg['model_class']}, {nparams:,} params, strict state_dict load OK)")
    n_fail = 0
    worst_overall = 0.0
    for case in cases:
        try:
            res = run_case(case, model, cfg, T)
        except Exception as ex:  # a crash is a failure, but keep checking the other cases
            print(f"FAIL {name}/{case['name']}: {type(ex).__name__}: {ex}")
            n_fail += 1
            continue
        over = case.get("output_tolerances") or {}
        rows = []
        for group in ("outputs", "intermediates"):
            for key, tkey in (case.get(group) or {}).items():
                tol = over.get(key, {"rtol": case["rtol"], "atol": case["atol"]})
                if key not in res:
                    rows.append((group, key, False, float("nan"), 0.0, float("inf"), "missing"))
                    continue
                ok, err, allowed, ratio = compare(res[key], T[tkey], tol["rtol"], tol["atol"])
                rows.append((group, key, ok, err, allowed, ratio, ""))
        ok_all = all(r[2] for r in rows)
        worst = max(rows, key=lambda r: r[5])
        worst_out = max((r for r in rows if r[0] == "outputs"), key=lambda r: r[5])
        worst_overall = max(worst_overall, worst[5])
        n_fail += not ok_all
        print(f"{'PASS' if ok_all else 'FAIL'} {name}/{case['name']:<26} outputs: worst {worst_out[1]} "
              f"|err|={worst_out[3]:.3g} (allowed {worst_out[4]:.3g}, ratio {worst_out[5]:.3f}); "
              f"incl. {sum(r[0] == 'intermediates' for r in rows)} intermediates: ratio {worst[5]:.3f}")
        if verbose or not ok_all:
            for g, key, ok, err, allowed, ratio, note in rows:
                print(f"      {'ok ' if ok else 'BAD'} {g[:5]} {key:<40} |err|={err:.3g} allowed={allowed:.3g} "
                      f"ratio={ratio:.3f} {note}")
    return len(cases), n_fail, worst_overall


def run_all(fixtures=DEFAULT_FIXTURES, only="", verbose=False):
    """Check every fixture directory; returns (cases, failures, worst ratio, fixture names)."""
    dirs = sorted(d for d in os.listdir(fixtures) if os.path.isfile(os.path.join(fixtures, d, "cases.json")))
    if only:
        dirs = [d for d in dirs if d in only.split(",")]
    total = fails = 0
    worst = 0.0
    print(f"torch {torch.__version__}; fixtures {fixtures}")
    for d in dirs:
        n, f, w = check_fixture(os.path.join(fixtures, d), verbose)
        total += n
        fails += f
        worst = max(worst, w)
    print(f"\nSUMMARY: {total - fails}/{total} cases passed in {len(dirs)} fixtures "
          f"(worst err/allowed over all outputs and intermediates: {worst:.3f})")
    return total, fails, worst, dirs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=DEFAULT_FIXTURES)
    ap.add_argument("--only", default="", help="comma-separated fixture directory names")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    total, fails, _, dirs = run_all(args.fixtures, args.only, args.verbose)
    sys.exit(1 if fails or not dirs else 0)


if __name__ == "__main__":
    main()
