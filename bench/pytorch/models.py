"""DiT, MDT v1 and MDTv2 in PyTorch, written from /work/shared/docs/MDT-SPEC.md.

This is a port of the official code (facebookresearch/DiT `models.py`, sail-sg/MDT `mdtv1` and
`main` `masked_diffusion/models.py`) for side-by-side timing; the official repositories cannot
be fetched on this machine. Module and parameter names follow the official state_dict keys
(spec §4), so the fixture weights load with `load_state_dict(strict=True)`, and the code keeps
the official structure (same ops in the same order, e.g. the gather-based masked rel-pos bias)
so that the timings are representative of the official code, not of a re-optimised variant.
`check_fixtures.py` proves numeric parity against fixtures produced by the official code.

The three timm pieces the official code imports (timm 0.6.x `PatchEmbed`, `Mlp`, `Attention`)
are inlined below with timm's parameter names and math.
"""
import math

import numpy as np
import torch
import torch.nn as nn


# ---------------------------------------------------------------------------------------------
# timm 0.6.x pieces (inlined: timm is not installable here)
# ---------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """timm PatchEmbed: Conv2d(kernel = stride = p), flatten to (B, N, D), no norm."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, bias=True):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = nn.Identity()

    def forward(self, x):
        x = self.proj(x)
        x = x.flatten(2).transpose(1, 2)  # BCHW -> BNC, token n = row*h + col
        return self.norm(x)


class Mlp(nn.Module):
    """timm Mlp (dropout 0, so the Dropout modules of timm are omitted: they hold no state)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """timm Attention (used by DiT): fused qkv, scale hd^-0.5, no bias."""

    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


# ---------------------------------------------------------------------------------------------
# Shared DiT components
# ---------------------------------------------------------------------------------------------

def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        # float32 throughout, cos first (spec §2.2); torch's float32 exp is what the fixtures hold.
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
        ).to(device=t.device)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    """Label table with one extra null row (index num_classes) for classifier-free guidance."""

    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels, force_drop_ids=None):
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(self, labels, train, force_drop_ids=None):
        if (train and self.dropout_prob > 0) or (force_drop_ids is not None):
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # shift first
        return self.linear(modulate(self.norm_final(x), shift, scale))


def _approx_gelu():
    return nn.GELU(approximate="tanh")


def _unpatchify(x, c, p):
    """(B, N, p*p*c) -> (B, c, H, W); inside a token the layout is (dy, dx, channel)."""
    h = w = int(x.shape[1] ** 0.5)
    assert h * w == x.shape[1]
    x = x.reshape(shape=(x.shape[0], h, w, p, p, c))
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(shape=(x.shape[0], c, h * p, h * p))


# 2D sin-cos table (MAE/DiT function, float64; first half encodes the column, second the row).
def get_2d_sincos_pos_embed(embed_dim, grid_size):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # w goes first
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    return get_2d_sincos_pos_embed_from_grid(embed_dim, grid)


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    assert embed_dim % 2 == 0
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # sin first


# ---------------------------------------------------------------------------------------------
# DiT
# ---------------------------------------------------------------------------------------------

class DiTBlock(nn.Module):
    """adaLN-Zero block (spec §2.4)."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio), act_layer=_approx_gelu)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


def _init_embedders(model, input_size, patch_size, in_channels, hidden_size, num_heads,
                    class_dropout_prob, num_classes, learn_sigma):
    """The attributes and embedders DiT's and MDT's constructors both set, in the official order
    (which fixes named_parameters() order); returns the number of patches."""
    model.learn_sigma = learn_sigma
    model.in_channels = in_channels
    model.out_channels = in_channels * 2 if learn_sigma else in_channels
    model.patch_size = patch_size
    model.num_heads = num_heads
    model.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
    model.t_embedder = TimestepEmbedder(hidden_size)
    model.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
    return model.x_embedder.num_patches


class DiT(nn.Module):
    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True):
        super().__init__()
        num_patches = _init_embedders(self, input_size, patch_size, in_channels, hidden_size, num_heads,
                                      class_dropout_prob, num_classes, learn_sigma)
        # DiT: fixed sin-cos embedding (a parameter, but frozen)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        _dit_style_init(self, self.blocks)

    def unpatchify(self, x):
        return _unpatchify(x, self.out_channels, self.x_embedder.patch_size[0])

    def forward(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        t = self.t_embedder(t)
        y = self.y_embedder(y, self.training)
        c = t + y
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        return self.unpatchify(x)

    def forward_with_cfg(self, x, t, y, cfg_scale):
        # Only 3 of the 4 eps channels are guided: the official "reproducibility" quirk (spec §7).
        half = x[: len(x) // 2]
        combined = torch.cat([half, half], dim=0)
        model_out = self.forward(combined, t, y)
        eps, rest = model_out[:, :3], model_out[:, 3:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        eps = torch.cat([half_eps, half_eps], dim=0)
        return torch.cat([eps, rest], dim=1)


def _dit_style_init(model, blocks_with_adaln, extra_pos=()):
    """Official initialize_weights (spec §2.8). Only the distribution matters for timing."""

    def _basic_init(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)

    model.apply(_basic_init)
    grid = int(model.x_embedder.num_patches ** 0.5)
    pos = torch.from_numpy(get_2d_sincos_pos_embed(model.pos_embed.shape[-1], grid)).float().unsqueeze(0)
    model.pos_embed.data.copy_(pos)
    for p in extra_pos:
        p.data.copy_(pos)
    w = model.x_embedder.proj.weight.data
    nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
    nn.init.constant_(model.x_embedder.proj.bias, 0)
    nn.init.normal_(model.y_embedder.embedding_table.weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)
    for block in blocks_with_adaln:
        nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
    nn.init.constant_(model.final_layer.adaLN_modulation[-1].weight, 0)
    nn.init.constant_(model.final_layer.adaLN_modulation[-1].bias, 0)
    nn.init.constant_(model.final_layer.linear.weight, 0)
    nn.init.constant_(model.final_layer.linear.bias, 0)


# ---------------------------------------------------------------------------------------------
# MDT: relative-position-bias attention, masked encoder, side-interpolater
# ---------------------------------------------------------------------------------------------

class RelativePositionBias(nn.Module):
    """BEiT-style table with (2h-1)^2 + 3 rows (the last 3 are never indexed) and an (N, N) index."""

    def __init__(self, window_size, num_heads):
        super().__init__()
        self.window_size = window_size
        self.num_relative_distance = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(self.num_relative_distance, num_heads))
        coords_h = torch.arange(window_size[0])
        coords_w = torch.arange(window_size[1])
        coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing="ij"))  # 2, Wh, Ww
        coords_flatten = torch.flatten(coords, 1)
        relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
        relative_coords = relative_coords.permute(1, 2, 0).contiguous()
        relative_coords[:, :, 0] += window_size[0] - 1
        relative_coords[:, :, 1] += window_size[1] - 1
        relative_coords[:, :, 0] *= 2 * window_size[1] - 1
        self.register_buffer("relative_position_index", relative_coords.sum(-1))  # persistent: in the state_dict

    def forward(self):
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous()  # (heads, N, N)


class MDTAttention(Attention):
    """timm Attention plus a per-block relative position bias (class `Attention` in MDT)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, num_patches=None):
        super().__init__(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        side = int(num_patches ** 0.5)
        self.rel_pos_bias = RelativePositionBias(window_size=[side, side], num_heads=num_heads)

    def get_masked_rel_bias(self, B, ids_keep):
        # Official formulation: materialise (B, heads, N, N), then two gathers down to (B, heads, L, L).
        rel_pos_bias = self.rel_pos_bias()
        rel_pos_bias = rel_pos_bias.unsqueeze(dim=0).repeat(B, 1, 1, 1)
        rel_pos_bias_masked = torch.gather(
            rel_pos_bias, dim=2,
            index=ids_keep.unsqueeze(dim=1).unsqueeze(dim=-1).repeat(1, rel_pos_bias.shape[1], 1, rel_pos_bias.shape[-1]))
        rel_pos_bias_masked = torch.gather(
            rel_pos_bias_masked, dim=3,
            index=ids_keep.unsqueeze(dim=1).unsqueeze(dim=2).repeat(1, rel_pos_bias.shape[1], ids_keep.shape[1], 1))
        return rel_pos_bias_masked

    def forward(self, x, ids_keep=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if ids_keep is not None:
            rp_bias = self.get_masked_rel_bias(B, ids_keep)
        else:
            rp_bias = self.rel_pos_bias()
        attn = attn + rp_bias
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class MDTBlock(nn.Module):
    """adaLN-Zero block with rel-pos attention; `skip=True` adds MDTv2's skip_linear (x first)."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, skip=False, num_patches=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = MDTAttention(hidden_size, num_heads=num_heads, qkv_bias=True, num_patches=num_patches)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio), act_layer=_approx_gelu)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))
        self.skip_linear = nn.Linear(2 * hidden_size, hidden_size) if skip else None

    def forward(self, x, c, skip=None, ids_keep=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), ids_keep=ids_keep)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class _MDTBase(nn.Module):
    """What MDT v1 and MDTv2 share: embeddings, learnable positions, masking, side-interpolater, CFG."""

    def _init_common(self, input_size, patch_size, in_channels, hidden_size, num_heads, mlp_ratio,
                     class_dropout_prob, num_classes, learn_sigma, mask_ratio, decode_layer):
        num_patches = _init_embedders(self, input_size, patch_size, in_channels, hidden_size, num_heads,
                                      class_dropout_prob, num_classes, learn_sigma)
        # MDT: both position embeddings are trainable (DiT freezes pos_embed).
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=True)
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=True)
        if mask_ratio is not None:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
            self.mask_ratio = float(mask_ratio)
        else:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size), requires_grad=False)
            self.mask_ratio = None
        self.decode_layer = int(decode_layer)
        return num_patches

    def _init_mdt_weights(self, all_blocks):
        _dit_style_init(self, all_blocks, extra_pos=(self.decoder_pos_embed,))
        for block in all_blocks:
            # timm trunc_normal_(std=.02) with absolute bounds +-2: effectively untruncated.
            nn.init.trunc_normal_(block.attn.rel_pos_bias.relative_position_bias_table, std=0.02)
        if self.mask_ratio is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    def unpatchify(self, x):
        return _unpatchify(x, self.out_channels, self.x_embedder.patch_size[0])

    def random_masking(self, x, mask_ratio, ids_shuffle=None):
        """MAE masking. `ids_shuffle` (B, N) replaces the argsort of torch.rand (used by the fixture
        check, whose official run fixed the permutation); without it this is the official code."""
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        if ids_shuffle is None:
            noise = torch.rand(N, L, device=x.device)
            ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]  # random order, deliberately not sorted
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)  # 1 = removed, original token order
        return x_masked, mask, ids_restore, ids_keep

    def forward_side_interpolater(self, x, c, mask, ids_restore):
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] - x.shape[1], 1)
        x_ = torch.cat([x, mask_tokens], dim=1)
        x = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))  # unshuffle
        x = x + self.decoder_pos_embed
        x_before = x
        for sideblock in self.sideblocks:
            x = sideblock(x, c, ids_keep=None)
        # masked shortcut: removed tokens take the side block's prediction, kept ones pass through
        mask = mask.unsqueeze(dim=-1)
        return x * mask + (1 - mask) * x_before

    def _embed(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        return x, c

    def forward_with_cfg(self, x, t, y, cfg_scale=None, diffusion_steps=1000, scale_pow=4.0):
        if cfg_scale is None:
            return self.forward(x, t, y)
        half = x[: len(x) // 2]  # x[B:] is ignored: both halves get the first half's input
        combined = torch.cat([half, half], dim=0)
        model_out = self.forward(combined, t, y)
        eps, rest = model_out[:, :3], model_out[:, 3:]  # only 3 of 4 eps channels guided (DiT quirk)
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        # power-cosine schedule over the original diffusion step; interpolates 1 -> cfg_scale
        scale_step = (1 - torch.cos(((1 - t / diffusion_steps) ** scale_pow) * math.pi)) * 1 / 2
        real_cfg_scale = (cfg_scale - 1) * scale_step + 1
        real_cfg_scale = real_cfg_scale[: len(x) // 2].unsqueeze(1).unsqueeze(2).unsqueeze(3)
        half_eps = uncond_eps + real_cfg_scale * (cond_eps - uncond_eps)
        eps = torch.cat([half_eps, half_eps], dim=0)
        return torch.cat([eps, rest], dim=1)


class MDT(_MDTBase):
    """MDT v1 (`mdtv1` branch): blocks.0..depth-1 (last decode_layer = decoder) + sideblocks.0."""

    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True,
                 mask_ratio=None, decode_layer=None):
        super().__init__()
        num_patches = self._init_common(input_size, patch_size, in_channels, hidden_size, num_heads, mlp_ratio,
                                        class_dropout_prob, num_classes, learn_sigma, mask_ratio, decode_layer)
        self.blocks = nn.ModuleList([
            MDTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, num_patches=num_patches) for _ in range(depth)])
        self.sideblocks = nn.ModuleList([
            MDTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, num_patches=num_patches) for _ in range(1)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self._init_mdt_weights(list(self.blocks) + list(self.sideblocks))

    def forward(self, x, t, y, enable_mask=False, ids_shuffle=None):
        x, c = self._embed(x, t, y)
        masked_stage = False
        if self.mask_ratio is not None and enable_mask:
            x, mask, ids_restore, ids_keep = self.random_masking(x, self.mask_ratio, ids_shuffle)
            masked_stage = True
        for i, block in enumerate(self.blocks):
            if i == (len(self.blocks) - self.decode_layer):
                if self.mask_ratio is not None and enable_mask:
                    x = self.forward_side_interpolater(x, c, mask, ids_restore)
                    masked_stage = False
                else:
                    x = x + self.decoder_pos_embed  # also in the unmasked forward
            x = block(x, c, ids_keep=ids_keep if masked_stage else None)
        x = self.final_layer(x, c)
        return self.unpatchify(x)


class MDTv2(_MDTBase):
    """MDTv2 (`main`): U-Net style encoder (LIFO long skips), dense input skips into the decoder."""

    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True,
                 mask_ratio=None, decode_layer=4):
        super().__init__()
        num_patches = self._init_common(input_size, patch_size, in_channels, hidden_size, num_heads, mlp_ratio,
                                        class_dropout_prob, num_classes, learn_sigma, mask_ratio, decode_layer)
        half_depth = (depth - self.decode_layer) // 2
        self.half_depth = half_depth

        def mk(skip):
            return MDTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio, skip=skip, num_patches=num_patches)

        self.en_inblocks = nn.ModuleList([mk(False) for _ in range(half_depth)])
        self.en_outblocks = nn.ModuleList([mk(True) for _ in range(half_depth)])
        self.de_blocks = nn.ModuleList([mk(True) for _ in range(self.decode_layer)])
        self.sideblocks = nn.ModuleList([mk(False) for _ in range(1)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self._init_mdt_weights(list(self.en_inblocks) + list(self.en_outblocks) + list(self.de_blocks)
                               + list(self.sideblocks))

    def forward(self, x, t, y, enable_mask=False, ids_shuffle=None, mask_ratio_u=None):
        x, c = self._embed(x, t, y)
        input_skip = x  # taken BEFORE masking: the decoder sees the masked tokens' content
        masked_stage = False
        skips = []
        if self.mask_ratio is not None and enable_mask:
            # one U per forward call; float32 tensor arithmetic decides len_keep
            u = torch.rand(1, device=x.device) if mask_ratio_u is None else torch.tensor([mask_ratio_u])
            rand_mask_ratio = u * 0.2 + self.mask_ratio
            x, mask, ids_restore, ids_keep = self.random_masking(x, rand_mask_ratio, ids_shuffle)
            masked_stage = True
        for blk in self.en_inblocks:
            x = blk(x, c, ids_keep=ids_keep if masked_stage else None)
            skips.append(x)
        for blk in self.en_outblocks:
            x = blk(x, c, skip=skips.pop(), ids_keep=ids_keep if masked_stage else None)  # LIFO
        if self.mask_ratio is not None and enable_mask:
            x = self.forward_side_interpolater(x, c, mask, ids_restore)
        else:
            x = x + self.decoder_pos_embed
        for blk in self.de_blocks:
            x = blk(x, c, skip=input_skip, ids_keep=None)
        x = self.final_layer(x, c)
        return self.unpatchify(x)


# ---------------------------------------------------------------------------------------------
# Named configurations used by the benchmark
# ---------------------------------------------------------------------------------------------

def DiT_S_2(**kw):
    return DiT(depth=12, hidden_size=384, patch_size=2, num_heads=6, **kw)


def MDT_S_2(**kw):
    return MDT(depth=12, hidden_size=384, patch_size=2, num_heads=6, **kw)


def MDTv2_S_2(**kw):
    return MDTv2(depth=12, hidden_size=384, patch_size=2, num_heads=6, **kw)
