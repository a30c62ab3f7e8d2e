"""MFU's two halves: the FLOPs a step needs (counted) and the FLOP/s a machine does (timed).

MFU (model FLOPs utilisation, PaLM appendix B) = the FLOPs the model *needs* per second ÷ the
FLOPs per second the machine can do. We count only matrix multiplications (2 FLOPs per
multiply–add); LayerNorm, GELU, softmax, masking, biases and the optimizer are left out,
as is usual — they are a few % of the matmul work and mostly memory-bound.

Forward FLOPs of one encoder–decoder pass, batch b, source length s, target length t
(every position counts, padding included: it is computed), d model width, f FFN width,
v vocabulary. Per *layer*, per sequence:

    encoder layer    self-attn projections  q k v out : 4 · 2·d·d · s
                     scores q·kᵀ + weighted sum a·v   : 2 · 2·s·s·d
                     FFN  d → f → d                   : 2 · 2·d·f · s
    decoder layer    self-attn projections            : 4 · 2·d·d · t
                     scores + weighted sum (causal,
                       full t×t is computed)          : 2 · 2·t·t·d
                     cross-attn q and out projections : 2 · 2·d·d · t
                     cross-attn k and v of the memory : 2 · 2·d·d · s   ← runs on *source* tokens
                     cross scores + weighted sum      : 2 · 2·t·s·d
                     FFN                              : 2 · 2·d·f · t
    output head (tied embedding, once)                : 2·d·v · t

Training = forward + backward ≈ 3 × forward (the backward of y = x·W needs two matmuls of the
same size: ∂x and ∂W). Without the attention-score terms this is the familiar
6 · N_active · tokens, with N_active the matmul weights each token passes through; the
score terms add 12·L·(query len)·(key len)·d per sequence, as in PaLM's 6N + 12·L·H·Q·T.

Experts: a hard-routed pool runs one expert per row, so it costs exactly one dense layer
(`experts_run=1`); a soft pool runs all m experts on every row (`experts_run=m`). The learned
task router is an MLP d_in → r → l·e run once per distinct task of the batch (u tasks):
2·u·l·(d_in·r + r·e) — under 0.2 % of the work at the `small` preset, counted anyway so that
the count equals `torch.utils.flop_counter` exactly (tests/test_bench.py checks it).

Timing on a shared machine (`time_interleaved`, `paired`): other processes come and go, so
variants are timed in alternating rounds (ABC CBA …) and compared round by round; the matmul
peak is timed in the same rounds as the model steps, so MFU divides like by like.

Read next: `minimoe/bench.py`, which runs all of this on dense, routed and reference models.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch
from torch import Tensor

from minimoe.config import ModelConfig, RouterConfig
from minimoe.model import routed_flags, task_vector_width


def encoder_layer_flops(d: int, f: int, s: int) -> int:
    """Forward FLOPs of one encoder layer on one sequence of s tokens."""
    projections = 4 * 2 * d * d * s
    attention = 2 * 2 * s * s * d
    ffn = 2 * 2 * d * f * s
    return projections + attention + ffn


def decoder_layer_flops(d: int, f: int, t: int, s: int) -> int:
    """Forward FLOPs of one decoder layer on one target of t tokens over s memory tokens."""
    self_attn = 4 * 2 * d * d * t + 2 * 2 * t * t * d
    cross_q_out = 2 * 2 * d * d * t
    cross_kv = 2 * 2 * d * d * s  # keys and values are projections of the encoder memory
    cross_scores = 2 * 2 * t * s * d
    ffn = 2 * 2 * d * f * t
    return self_attn + cross_q_out + cross_kv + cross_scores + ffn


def router_flops(cfg: ModelConfig, rcfg: RouterConfig | None, n_batch_tasks: int) -> int:
    """Forward FLOPs of the learned router for u = n_batch_tasks distinct tasks (0 if none)."""
    n_routed = sum(sum(flags) for flags in routed_flags(cfg))  # l
    if rcfg is None or rcfg.routing != "learned" or n_routed == 0:
        return 0
    d_in = task_vector_width(cfg, rcfg)
    r = rcfg.d_router_hidden
    return 2 * n_batch_tasks * n_routed * (d_in * r + r * cfg.n_experts)


def forward_flops(cfg: ModelConfig, b: int, s: int, t: int, experts_run: int = 1,
                  rcfg: RouterConfig | None = None, n_batch_tasks: int = 0) -> int:
    """Forward FLOPs of `TaskMoETransformer` on a batch: src [b s], tgt_in [b t].

    experts_run: experts computed per row at a routed position (1 = dense / hard routing,
    m = soft routing); for FFN-only experts (expert_kind="ffn") only the FFN term repeats.
    rcfg, n_batch_tasks: add the learned router's FLOPs for that many distinct tasks.
    """
    d, f = cfg.d_model, cfg.d_ff
    enc_routed, dec_routed = (any(flags) for flags in routed_flags(cfg))

    def times(layer: int, ffn: int, is_routed: bool) -> int:
        if not is_routed or experts_run == 1:
            return layer
        if cfg.expert_kind == "ffn":  # attention shared, only the FFN runs m times
            return layer + (experts_run - 1) * ffn
        return experts_run * layer

    enc = times(encoder_layer_flops(d, f, s), 2 * 2 * d * f * s, enc_routed)
    dec = times(decoder_layer_flops(d, f, t, s), 2 * 2 * d * f * t, dec_routed)
    head = 2 * d * cfg.vocab_size * t
    model = b * (cfg.n_enc_layers * enc + cfg.n_dec_layers * dec + head)
    return model + router_flops(cfg, rcfg, n_batch_tasks)


def train_flops(cfg: ModelConfig, b: int, s: int, t: int, experts_run: int = 1,
                rcfg: RouterConfig | None = None, n_batch_tasks: int = 0) -> int:
    """FLOPs of one training step (forward + backward) = 3 × forward (see module docstring)."""
    return 3 * forward_flops(cfg, b, s, t, experts_run, rcfg, n_batch_tasks)


def active_matmul_params(cfg: ModelConfig) -> dict[str, int]:
    """N_active per token kind: the matmul weights an encoder token, a decoder token and a
    memory token (through cross-attention k, v) pass through, for the 6·N·tokens view."""
    d, f = cfg.d_model, cfg.d_ff
    return {"encoder_token": cfg.n_enc_layers * (4 * d * d + 2 * d * f),
            "decoder_token": cfg.n_dec_layers * (6 * d * d + 2 * d * f) + d * cfg.vocab_size,
            "memory_token": cfg.n_dec_layers * 2 * d * d}


def matmul_op(n: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Callable[[], Tensor]:
    """A closure running one n×n @ n×n matmul (2·n³ FLOPs): the machine's peak, when timed."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    w = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    return lambda: torch.mm(a, w)


def measure_peak_gflops(n: int = 1024, device: str = "cpu", rounds: int = 5) -> float:
    """The fp32 matmul peak in GFLOP/s, on its own (`minimoe bench` times it among the models)."""
    times = time_interleaved({"mm": matmul_op(n, torch.device(device))}, torch.device(device), rounds, 1)
    return 2 * n**3 / statistics.median(times["mm"]) / 1e6


def time_interleaved(fns: dict[str, Callable[[], None]], device: torch.device, rounds: int,
                     inner: int) -> dict[str, list[float]]:
    """ms per call of every fn, one value per round; variants alternate ABC CBA ABC …
    Warm-up first: max(2, inner) untimed calls each (allocator, kernel choice, lazy init)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for fn in fns.values():
        for _ in range(max(2, inner)):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name in list(fns) if r % 2 == 0 else reversed(list(fns)):
            sync()
            start = time.perf_counter()
            for _ in range(inner):
                fns[name]()
            sync()
            times[name].append((time.perf_counter() - start) / inner * 1e3)
    return times


def paired(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of times[a] / times[b]. Both were timed in the same round, seconds
    apart, so a load burst from another process inflates both: the ratio survives it."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def describe_machine(device: torch.device) -> dict:
    """What the numbers were measured on (printed above the table and stored in the JSON)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
