"""Transformer building blocks: masked multi-head attention, pre-LN residual blocks, layers.

Implements the encoder and decoder layers of the paper's BART-style base model (lessons/paper_facts.md;
Vaswani et al. 2017 §3.1–3.2.3), written out with einops so every shape is visible. Each layer
is what one expert holds in `minimoe/experts.py` (read next).

Shapes (axis legend in `minimoe/__init__.py`): `x [b t d]` (or `[b s d]` in the encoder),
`memory [b s d]` the encoder output, `src_pad [b s]` bool with True = real token,
`q [b h t k]`, `k v [b h s k]`, attention masks bool `[b 1 t s]` with True = may attend.

Deviations from the paper: pre-LayerNorm residual blocks (BART is post-LN) because pre-LN
trains stably without warm-up tricks at our tiny scale; the final LayerNorm of the encoder
and decoder stacks lives in `minimoe/model.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import Tensor, nn

from minimoe.config import ModelConfig
from minimoe.errors import ConfigError


def make_mask(src_pad: Tensor | None, t: int, s: int, causal: bool,
              device: torch.device | str | None = None) -> Tensor | None:
    """Build the boolean attention mask: True where query position i may attend to key j.

    src_pad [b s] bool, True = real token (keys that are padding get masked out);
    t, s: query and key lengths; causal: also hide keys j > i (the decoder's future).
    Returns [b 1 t s] (with padding), [1 1 t s] (causal only) or None (nothing to mask);
    the singleton axes broadcast over heads (and batch) inside `attention`.
    `device` places the causal mask when there is no `src_pad` to take the device from.

    Only keys are masked: a padded *query* still attends to the real keys, and whatever it
    computes is ignored downstream (loss and pooling skip padding).
    Deviations: none (the causal mask is aligned top-left, as SDPA's `is_causal`).
    """
    # BEGIN EXERCISE 1.2: build the padding and causal masks
    # HINT: src_pad may be None (no padding) and causal False: with neither, return None.
    # HINT: padding: repeat src_pad [b s] to [b 1 t s] (einops.repeat): every query row sees
    # HINT: the same keys; the singleton axis broadcasts over heads.
    # HINT: causal: torch.ones(t, s, dtype=torch.bool).tril() keeps j <= i; make it [1 1 t s].
    # HINT: with both, a key is visible only if both masks allow it (logical and, `&`).
    mask = None
    if src_pad is not None:
        mask = repeat(src_pad.bool(), "b s -> b 1 t s", t=t)
        device = src_pad.device
    if causal:
        past = torch.ones(t, s, dtype=torch.bool, device=device).tril()  # [t s]
        past = rearrange(past, "t s -> 1 1 t s")
        mask = past if mask is None else mask & past  # [b 1 t s]
    return mask
    # END EXERCISE 1.2


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
              dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention, softmax(q kᵀ / √k_width) v, written out (Vaswani eq. 1).

    q [b h t k], k v [b h s k]; mask bool broadcastable to [b h t s], True = may attend.
    Returns [b h t k]. A query that may attend to no key at all (a fully padded source)
    returns zeros — never NaN — exactly like `F.scaled_dot_product_attention`.
    dropout_p drops attention weights (pass 0 in eval, as with SDPA).
    Deviations: none; this is the version to read, `fused_attention` the one that runs fast.
    """
    # BEGIN EXERCISE 1.1: attention scores, mask and softmax
    # HINT: the code after this region reads `weights` [b h t s]: assign it (rows sum to 1 over s).
    # HINT: mask may be None (nothing masked): then skip both masking steps.
    # HINT: scores [b h t s] = einsum(q, k, "b h t k, b h s k -> b h t s") / sqrt(head width).
    # HINT: fill masked scores with torch.finfo(scores.dtype).min, not -inf: a fully masked
    # HINT: row then softmaxes to finite numbers instead of NaN (0/0).
    # HINT: after the softmax, set masked weights to exactly 0 (masked_fill) so that a fully
    # HINT: masked row gives weight 0 everywhere, as SDPA does.
    scores = einsum(q, k, "b h t k, b h s k -> b h t s") * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)  # [b h t s], each row sums to 1 over s
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    # END EXERCISE 1.1
    weights = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return einsum(weights, v, "b h t s, b h s k -> b h t k")


def fused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                    dropout_p: float = 0.0) -> Tensor:
    """`attention` through PyTorch's fused kernel (flash / memory-efficient on CUDA).

    Same signature, shapes and result as `attention` (tests/test_layers.py checks it).
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


# Where fused_attention="auto" runs PyTorch's fused kernel instead of the explicit math: on
# CUDA (flash / memory-efficient kernels) and on CPU too, where one fused op replaces the ~6
# einsum/mask/softmax ops of `attention` and their copies (timings: lessons/performance.md).
# Both are tested equal.
FUSED_AUTO_DEVICES = ("cuda", "cpu")


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani §3.2.2): h heads of width k = d / h attend, then merge.

    Self-attention when `memory` is None, cross-attention over `memory` otherwise.
    fused: "on" always uses `fused_attention`, "off" never (the explicit version, to step
    through), "auto" the faster one for the tensor's device — see `FUSED_AUTO_DEVICES`.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, fused: str = "auto"):
        super().__init__()
        if fused not in ("auto", "on", "off"):
            raise ConfigError(f"fused={fused!r} must be 'auto', 'on' or 'off'; set --fused_attention.")
        if d_model % n_heads != 0:
            raise ConfigError(f"d_model={d_model} is not divisible by n_heads={n_heads}.")
        self.n_heads, self.dropout, self.fused = n_heads, dropout, fused
        self.to_q = nn.Linear(d_model, d_model)
        self.to_k = nn.Linear(d_model, d_model)
        self.to_v = nn.Linear(d_model, d_model)
        self.to_out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x [b t d], memory [b s d] | None, mask bool [b 1 t s] | None -> [b t d]."""
        source = x if memory is None else memory  # keys and values come from here
        q = rearrange(self.to_q(x), "b t (h k) -> b h t k", h=self.n_heads)
        k = rearrange(self.to_k(source), "b s (h k) -> b h s k", h=self.n_heads)
        v = rearrange(self.to_v(source), "b s (h k) -> b h s k", h=self.n_heads)
        use_fused = self.fused == "on" or (self.fused == "auto" and x.device.type in FUSED_AUTO_DEVICES)
        attend = fused_attention if use_fused else attention
        out = attend(q, k, v, mask, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(rearrange(out, "b h t k -> b t (h k)"))


class SelfAttentionBlock(nn.Module):
    """Pre-LN residual self-attention: x + attn(LayerNorm(x)). Causal in the decoder.

    forward(x [b t d], src_pad [b t] | None = None, **ctx) -> [b t d]; `src_pad` is the
    padding of x itself (the encoder's source); the decoder passes none (its causal mask
    already hides the right-padding of targets from every real position).
    Extra **ctx keywords are accepted and ignored, so an ExpertPool can hand the same ctx
    to every kind of expert.
    """

    def __init__(self, cfg: ModelConfig, causal: bool):
        super().__init__()
        self.causal = causal
        self.norm = nn.LayerNorm(cfg.d_model)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cfg.fused_attention)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, src_pad: Tensor | None = None, **ctx) -> Tensor:
        t = x.shape[1]
        mask = make_mask(src_pad, t, t, self.causal, device=x.device)
        return x + self.drop(self.attn(self.norm(x), mask=mask))


class CrossAttentionBlock(nn.Module):
    """Pre-LN residual cross-attention: x + attn(LayerNorm(x), memory), padded memory masked.

    forward(x [b t d], memory [b s d], src_pad [b s] | None = None, **ctx) -> [b t d].
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cfg.fused_attention)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, memory: Tensor, src_pad: Tensor | None = None, **ctx) -> Tensor:
        mask = make_mask(src_pad, x.shape[1], memory.shape[1], causal=False, device=x.device)
        return x + self.drop(self.attn(self.norm(x), memory, mask=mask))


class FeedForwardBlock(nn.Module):
    """Pre-LN residual position-wise FFN (Vaswani et al. §3.3): x + W₂ GELU(W₁ LayerNorm(x)).

    forward(x [b t d], **ctx) -> [b t d]; hidden width f = cfg.d_ff.
    Deviations: GELU instead of ReLU, as in BART.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.ffn = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(),
                                 nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, **ctx) -> Tensor:
        return x + self.drop(self.ffn(self.norm(x)))


class EncoderLayer(nn.Module):
    """One encoder layer: bidirectional self-attention, then FFN (both pre-LN residual).

    forward(x [b s d], src_pad [b s] | None = None, **ctx) -> [b s d].
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = SelfAttentionBlock(cfg, causal=False)
        self.ffn = FeedForwardBlock(cfg)

    def forward(self, x: Tensor, src_pad: Tensor | None = None, **ctx) -> Tensor:
        return self.ffn(self.self_attn(x, src_pad=src_pad))


class DecoderLayer(nn.Module):
    """One decoder layer: causal self-attention, cross-attention to the encoder, FFN.

    forward(x [b t d], memory [b s d], src_pad [b s] | None = None, **ctx) -> [b t d];
    `src_pad` masks the padded source positions of `memory` in cross-attention.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = SelfAttentionBlock(cfg, causal=True)
        self.cross_attn = CrossAttentionBlock(cfg)
        self.ffn = FeedForwardBlock(cfg)

    def forward(self, x: Tensor, memory: Tensor, src_pad: Tensor | None = None, **ctx) -> Tensor:
        x = self.self_attn(x)  # target padding needs no mask: it sits after every real token
        x = self.cross_attn(x, memory, src_pad=src_pad)
        return self.ffn(x)
