"""What `minimoe bench` times: a mixed-task batch, the models side by side, one step of each.

`build_models` makes, from one seed, the dense model (n_experts=1), hard-routed MoEs upcycled
from it (straight-through Gumbel) through each dispatch path of `FastExpertPool` (the device's
default, rows sorted per expert, grouped GEMM where torch has it, and the general
group → dispatch → combine path), a soft-routed MoE (softmax: all experts run), the dense model
`extract`ed from the hard MoE for task 0, and `TorchTransformer`, `torch.nn.Transformer` with the
same dimensions: the baseline to beat. `train_step`, `infer_step` and `generate_step` return each
measured call as a closure; `make_batch` is the random batch that mixes N_TASKS tasks.

What token-level routing costs (lesson 09): `token_ffn_step_ratio` times forward + backward of
one FFN block, the dense pre-LN `FeedForwardBlock` beside the token-routed `TokenMoEFFN` (router,
top-k, grouping per expert, aux losses) with the same width per expert; with k = 1 both do the
same FFN FLOPs, so the ratio is the price of routing itself. If the `mixture-of-experts` package
(lucidrains' compact top-2 layer) is importable its layer is timed too; minimoe never installs it.
Read next: `minimoe/bench_report.py` (the table `minimoe bench` prints).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import warnings
from typing import Callable

import torch
from einops import einsum
from torch import Tensor, nn

from minimoe.batching import Batch
from minimoe.config import ModelConfig, RouterConfig
from minimoe.device import autocast_context, make_optimizer
from minimoe.fastpool import FastExpertPool
from minimoe.flops import paired, time_interleaved
from minimoe.grouped import grouped_mm_works
from minimoe.layers import FeedForwardBlock
from minimoe.model import TaskMoETransformer
from minimoe.token_router import TokenMoEFFN
from minimoe.train import param_groups, seq2seq_loss
from minimoe.upcycle import extract, upcycle

N_TASKS, PAD = 8, 0


def make_batch(b: int, s: int, t: int, vocab: int, device: torch.device, seed: int = 0) -> Batch:
    """Random tokens: src [b s] with row lengths between s/2 and s (padding = 0), tgt [b t],
    task ids 0, 1, …, 7, 0, … so that every batch mixes N_TASKS tasks."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (b, s), generator=gen)
    lengths = torch.randint(s // 2, s + 1, (b,), generator=gen)
    src[torch.arange(s)[None, :] >= lengths[:, None]] = PAD  # [b s]
    tgt = torch.randint(3, vocab, (b, t + 1), generator=gen)
    task = torch.arange(b) % N_TASKS
    return Batch(src.to(device), tgt[:, :-1].to(device), tgt[:, 1:].to(device), task.to(device))


class TorchTransformer(nn.Module):
    """`torch.nn.Transformer` with minimoe's dimensions (pre-LN, GELU, batch_first), the same
    learned token + position embeddings and tied output head: the baseline to beat."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * cfg.init_std)
        with warnings.catch_warnings():  # "nested tensors are off with norm_first": expected
            warnings.simplefilter("ignore")
            self.core = nn.Transformer(cfg.d_model, cfg.n_heads, cfg.n_enc_layers, cfg.n_dec_layers,
                                       cfg.d_ff, cfg.dropout, "gelu", batch_first=True, norm_first=True)

    def forward(self, src: Tensor, tgt_in: Tensor, task_ids: Tensor | None = None) -> Tensor:
        """src [b s], tgt_in [b t] → logits [b t v]; torch masks say True = *hidden*."""
        s, t = src.shape[1], tgt_in.shape[1]
        hidden_future = torch.ones(t, t, dtype=torch.bool, device=src.device).triu(1)  # [t t]
        y = self.core(self.embed(src) + self.pos[:s], self.embed(tgt_in) + self.pos[:t],
                      tgt_mask=hidden_future, src_key_padding_mask=src == PAD,
                      memory_key_padding_mask=src == PAD)
        return einsum(y, self.embed.weight, "b t d, v d -> b t v")


def build_models(cfg: ModelConfig, n_experts: int, device: torch.device) -> dict[str, nn.Module]:
    """dense, hard (st_gumbel), soft (softmax) — both upcycled from dense — extracted, torch."""
    torch.manual_seed(0)
    dense_cfg = dataclasses.replace(cfg, n_experts=1)
    dense = TaskMoETransformer(dense_cfg, RouterConfig(routing="dense"), N_TASKS).to(device)
    moe_cfg = dataclasses.replace(cfg, n_experts=n_experts)

    def routed(selection: str) -> TaskMoETransformer:
        rcfg = RouterConfig(selection=selection, st_mode="selected")
        return upcycle(dense, moe_cfg, rcfg, N_TASKS, noise_std=cfg.upcycle_noise).to(device)

    def hard_via(path: str) -> TaskMoETransformer:  # the same hard MoE, one dispatch path forced
        model = routed("st_gumbel")
        for pool in (m for m in model.modules() if isinstance(m, FastExpertPool)):
            pool.path = path
        return model

    hard = routed("st_gumbel")  # path "auto": what training runs on this device
    models = {"dense": dense, "hard": hard, "hard_sorted": hard_via("sorted"),
              "hard_general": hard_via("general")}  # group_rows → dispatch → combine
    # One grouped-GEMM call per Linear (minimoe/grouped.py), where torch has the kernel here:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if grouped_mm_works(device.type, dtype):
        models["hard_grouped"] = hard_via("grouped")
    return {**models, "soft": routed("softmax"), "extracted": extract(hard, task_id=0),
            "torch": TorchTransformer(dense_cfg).to(device)}


def train_step(model: nn.Module, batch: Batch, device: torch.device,
               variant: str = "as_training") -> Callable[[], None]:
    """One `train.fit` step as a closure: forward, loss, backward, clip, AdamW.

    variant: "as_training" = device.py's optimizer and autocast; "fused_adamw" = PyTorch's fused
    AdamW kernel instead; "plain_fp32" = no autocast, default AdamW (what device.py's CUDA tricks
    are measured against); "fwd_bwd" = as_training without clip and AdamW (full − this = the
    parameter update, which grows with the m× parameters of an MoE, not with the active ones).
    """
    groups = param_groups(model, 1e-3, 1e-3, 1e-2)
    opt = {"as_training": lambda: make_optimizer(groups, device),
           "fused_adamw": lambda: torch.optim.AdamW(groups, fused=True),
           "plain_fp32": lambda: torch.optim.AdamW(groups),
           "fwd_bwd": lambda: make_optimizer(groups, device)}[variant]()
    update = variant != "fwd_bwd"
    precision = contextlib.nullcontext if variant == "plain_fp32" else lambda: autocast_context(device)
    model.train()

    def step() -> None:
        with precision():
            logits = model(batch.src, batch.tgt_in, batch.task)
        loss = seq2seq_loss(logits, batch.labels, PAD, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if update:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    return step


def infer_step(model: nn.Module, batch: Batch, device: torch.device) -> Callable[[], None]:
    """Eval-mode forward without gradients (what scoring and serving run)."""
    def step() -> None:
        with torch.no_grad(), autocast_context(device):
            model(batch.src, batch.tgt_in, batch.task)
    return step


def generate_step(model: TaskMoETransformer, batch: Batch, n_new: int) -> Callable[[], None]:
    """Greedy generation of exactly n_new tokens per row (EOS id = vocab: never produced)."""
    return lambda: model.generate(batch.src, batch.task, eos_id=model.cfg.vocab_size, max_new=n_new)


def _block_step(block: nn.Module, x: torch.Tensor, aux: Callable[[], torch.Tensor | float]) -> Callable[[], None]:
    """One forward + backward of `block` on x, with a stand-in loss plus the block's aux loss."""
    def run() -> None:
        out, own_aux = block(x), 0.0
        if isinstance(out, tuple):  # the package's layer returns (output, its aux loss)
            out, own_aux = out
        loss = out.square().mean() + own_aux + aux()
        block.zero_grad(set_to_none=True)
        loss.backward()
    return run


def _moe_package(d_model: int, d_ff: int, n_experts: int) -> Callable[[torch.Tensor], nn.Module] | None:
    """A builder for the `mixture-of-experts` package's MoE layer, or None when not importable."""
    try:
        from mixture_of_experts import MoE
    except ImportError:
        return None
    return lambda x: MoE(dim=d_model, num_experts=n_experts, hidden_dim=d_ff, activation=nn.GELU).to(x.device)


def token_ffn_step_ratio(d_model: int = 64, d_ff: int = 256, n_experts: int = 3, k: int = 1,
                         tokens: int = 1024, rounds: int = 15, inner: int = 5, seed: int = 0,
                         device: str | torch.device = "cpu") -> dict:
    """ms per forward+backward step of a dense FFN block and of TokenMoEFFN, and their ratio.

    Returns {"dense_ms", "token_ms", "token_over_dense", "moe_package_ms",
    "moe_package_over_dense", "settings"}; the package entries are None when it is absent.
    Tokens arrive as one sequence [1 tokens d] (routing is per token, so the split into b and s
    does not matter).
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=d_model, n_heads=1, d_ff=d_ff)
    x = torch.randn(1, tokens, d_model, device=device)
    dense = FeedForwardBlock(cfg).to(device)
    token = TokenMoEFFN(cfg, n_experts, k).to(device)
    fns = {"dense": _block_step(dense, x, lambda: 0.0),
           "token": _block_step(token, x, lambda: token.take_aux_loss(1e-2, 1e-3))}
    build_package = _moe_package(d_model, d_ff, n_experts)
    if build_package is not None:
        package = build_package(x)
        fns["moe_package"] = _block_step(package, x, lambda: 0.0)
    times = time_interleaved(fns, device, rounds, inner)
    result = {"dense_ms": statistics.median(times["dense"]), "token_ms": statistics.median(times["token"]),
              "token_over_dense": paired(times, "token", "dense"), "moe_package_ms": None,
              "moe_package_over_dense": None,
              "settings": {"d_model": d_model, "d_ff": d_ff, "n_experts": n_experts, "k": k, "tokens": tokens,
                           "rounds": rounds, "threads": torch.get_num_threads(), "device": str(device)}}
    if "moe_package" in times:
        result["moe_package_ms"] = statistics.median(times["moe_package"])
        result["moe_package_over_dense"] = paired(times, "moe_package", "dense")
    return result
