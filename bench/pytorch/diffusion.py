"""Gaussian diffusion (ADM/IDDPM code as shipped by DiT and MDT), written from MDT-SPEC.md §6.

Covers what training and one sampling step need: the linear float64 schedule, respacing
(`space_timesteps` + the SpacedDiffusion beta re-derivation, which the 1000-step training
diffusion also goes through), q_sample, the learned-range variance, the hybrid loss
(MSE + VLB with a stop-gradient mean, discretized NLL at t = 0), MDTv2's min-SNR weight,
and single DDPM / DDIM steps. Every float64 table lookup is cast to float32 before use,
exactly like the official `_extract_into_tensor`.
"""
import numpy as np
import torch as th


# ---------------------------------------------------------------------------------------------
# helpers (diffusion_utils.py)
# ---------------------------------------------------------------------------------------------

def mean_flat(tensor):
    return tensor.mean(dim=list(range(1, len(tensor.shape))))


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + th.exp(logvar1 - logvar2)
                  + ((mean1 - mean2) ** 2) * th.exp(-logvar2))


def approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + th.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * th.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
    """Bin half-width 1/255 with open edge bins (designed for pixels, applied to latents)."""
    centered_x = x - means
    inv_stdv = th.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = th.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = th.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return th.where(x < -0.999, log_cdf_plus,
                    th.where(x > 0.999, log_one_minus_cdf_min, th.log(cdf_delta.clamp(min=1e-12))))


def _extract_into_tensor(arr, timesteps, broadcast_shape):
    # float64 table -> index -> float32 (this cast is part of the official numerics)
    res = th.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
    while len(res.shape) < len(broadcast_shape):
        res = res[..., None]
    return res + th.zeros(broadcast_shape, device=timesteps.device)


# ---------------------------------------------------------------------------------------------
# schedule and respacing (gaussian_diffusion.py, respace.py)
# ---------------------------------------------------------------------------------------------

def linear_betas(num_diffusion_timesteps=1000):
    scale = 1000 / num_diffusion_timesteps
    return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)


def space_timesteps(num_timesteps, section_counts):
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired_count = int(section_counts[len("ddim"):])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired_count:
                    return set(range(0, num_timesteps, i))
            raise ValueError(f"cannot create exactly {num_timesteps} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(f"cannot divide section of {size} steps into {section_count}")
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            all_steps.append(start_idx + round(cur_idx))  # Python round: half to even
            cur_idx += frac_stride  # accumulated, not k*stride
        start_idx += size
    return set(all_steps)


class GaussianDiffusion:
    """EPSILON mean, LEARNED_RANGE variance, MSE loss type (the only configuration DiT/MDT use)."""

    def __init__(self, betas, min_snr_gamma=None):
        self.betas = betas = np.array(betas, dtype=np.float64)
        self.num_timesteps = int(betas.shape[0])
        self.min_snr_gamma = min_snr_gamma  # MDTv2 only
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # posterior variance is 0 at t = 0, so its log is clipped by reusing step 1
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])) \
            if len(self.posterior_variance) > 1 else np.array([])
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.timestep_map = list(range(self.num_timesteps))

    # the network is always called with the ORIGINAL step (identity map here, see SpacedDiffusion)
    def _wrap_model(self, model):
        return model

    def q_sample(self, x_start, t, noise):
        return (_extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        mean = (_extract_into_tensor(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + _extract_into_tensor(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        variance = _extract_into_tensor(self.posterior_variance, t, x_t.shape)
        log_variance_clipped = _extract_into_tensor(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance_clipped

    def _predict_xstart_from_eps(self, x_t, t, eps):
        return (_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

    def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return ((_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart)
                / _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def p_mean_variance(self, model, x, t, model_kwargs=None):
        model_kwargs = model_kwargs or {}
        B, C = x.shape[:2]
        model_output = model(x, t, **model_kwargs)
        model_output, model_var_values = th.split(model_output, C, dim=1)
        # LEARNED_RANGE: v in [-1, 1] interpolates log beta_t and the clipped posterior log-variance
        min_log = _extract_into_tensor(self.posterior_log_variance_clipped, t, x.shape)
        max_log = _extract_into_tensor(np.log(self.betas), t, x.shape)  # respaced betas when spaced
        frac = (model_var_values + 1) / 2
        model_log_variance = frac * max_log + (1 - frac) * min_log
        model_variance = th.exp(model_log_variance)
        pred_xstart = self._predict_xstart_from_eps(x_t=x, t=t, eps=model_output)  # latents: no clipping
        model_mean, _, _ = self.q_posterior_mean_variance(x_start=pred_xstart, x_t=x, t=t)
        return {"mean": model_mean, "variance": model_variance, "log_variance": model_log_variance,
                "pred_xstart": pred_xstart, "model_output": th.cat([model_output, model_var_values], 1)}

    def _vb_terms_bpd(self, model, x_start, x_t, t, model_kwargs=None):
        true_mean, _, true_log_variance_clipped = self.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)
        out = self.p_mean_variance(model, x_t, t, model_kwargs=model_kwargs)
        kl = normal_kl(true_mean, true_log_variance_clipped, out["mean"], out["log_variance"])
        kl = mean_flat(kl) / np.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
        decoder_nll = mean_flat(decoder_nll) / np.log(2.0)
        return {"output": th.where((t == 0), decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    def mse_weight(self, t, shape_like):
        """MDTv2 min-SNR-gamma weight min(SNR, gamma)/SNR on the MSE term (float32)."""
        snr = (_extract_into_tensor(self.sqrt_alphas_cumprod, t, t.shape)
               / _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, t.shape)) ** 2
        return th.stack([snr, self.min_snr_gamma * th.ones_like(t)], dim=1).min(dim=1)[0] / snr

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None):
        model = self._wrap_model(model)
        model_kwargs = model_kwargs or {}
        if noise is None:
            noise = th.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)
        terms = {}
        model_output = model(x_t, t, **model_kwargs)
        B, C = x_t.shape[:2]
        assert model_output.shape == (B, C * 2, *x_t.shape[2:])
        model_output, model_var_values = th.split(model_output, C, dim=1)
        # The VLB term must only train the variance: the mean uses a detached eps prediction.
        frozen_out = th.cat([model_output.detach(), model_var_values], dim=1)
        terms["vb"] = self._vb_terms_bpd(model=lambda *args, r=frozen_out: r,
                                         x_start=x_start, x_t=x_t, t=t)["output"]
        terms["mse"] = mean_flat((noise - model_output) ** 2)
        if self.min_snr_gamma is not None:
            terms["mse_weight"] = self.mse_weight(t, terms["mse"])
            terms["mse"] = terms["mse_weight"] * terms["mse"]
        terms["loss"] = terms["mse"] + terms["vb"]
        terms["x_t"] = x_t
        terms["model_out"] = th.cat([model_output, model_var_values], dim=1)
        return terms

    def p_sample(self, model, x, t, model_kwargs=None, noise=None):
        out = self.p_mean_variance(self._wrap_model(model), x, t, model_kwargs=model_kwargs)
        if noise is None:
            noise = th.randn_like(x)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))  # no noise at t == 0
        sample = out["mean"] + nonzero_mask * th.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, **out}

    def ddim_sample(self, model, x, t, model_kwargs=None, eta=0.0, noise=None):
        out = self.p_mean_variance(self._wrap_model(model), x, t, model_kwargs=model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = _extract_into_tensor(self.alphas_cumprod, t, x.shape)
        alpha_bar_prev = _extract_into_tensor(self.alphas_cumprod_prev, t, x.shape)
        sigma = eta * th.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * th.sqrt(1 - alpha_bar / alpha_bar_prev)
        if noise is None:
            noise = th.randn_like(x)
        mean_pred = out["pred_xstart"] * th.sqrt(alpha_bar_prev) + th.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps
        nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))
        sample = mean_pred + nonzero_mask * sigma * noise
        return {"sample": sample, **out}


class SpacedDiffusion(GaussianDiffusion):
    """Keeps a subset of steps; re-derives betas from the base cumprod (also for all 1000 steps)."""

    def __init__(self, use_timesteps, betas, min_snr_gamma=None):
        self.use_timesteps = set(use_timesteps)
        base = GaussianDiffusion(betas)
        last_alpha_cumprod = 1.0
        new_betas = []
        timestep_map = []
        for i, alpha_cumprod in enumerate(base.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                last_alpha_cumprod = alpha_cumprod
                timestep_map.append(i)
        super().__init__(np.array(new_betas), min_snr_gamma=min_snr_gamma)
        self.timestep_map = timestep_map

    def _wrap_model(self, model):
        timestep_map = self.timestep_map

        def wrapped(x, ts, **kwargs):
            # respaced index k -> original step; the network never sees k
            map_tensor = th.tensor(timestep_map, device=ts.device, dtype=ts.dtype)
            return model(x, map_tensor[ts], **kwargs)

        return wrapped


def create_diffusion(timestep_respacing="", diffusion_steps=1000, min_snr_gamma=None):
    """`create_diffusion` of DiT/MDT for the configuration they use (linear, learned sigma, MSE)."""
    if timestep_respacing is None or timestep_respacing == "":
        timestep_respacing = [diffusion_steps]
    return SpacedDiffusion(space_timesteps(diffusion_steps, timestep_respacing),
                           linear_betas(diffusion_steps), min_snr_gamma=min_snr_gamma)


def mdt_training_losses(diffusion, model, x_start, t, y, noise=None, noise_masked=None, mask_kwargs=None):
    """One MDT training objective (train_util.forward_backward): the SAME x0 and t go through a full
    branch and a masked branch, each with its own noise; per-branch means are summed (UniformSampler
    weights are all 1)."""
    losses = diffusion.training_losses(model, x_start, t, model_kwargs={"y": y}, noise=noise)
    kw = {"y": y, "enable_mask": True, **(mask_kwargs or {})}
    losses_mask = diffusion.training_losses(model, x_start, t, model_kwargs=kw, noise=noise_masked)
    total = losses["loss"].mean() + losses_mask["loss"].mean()
    return total, losses, losses_mask
