"""Will the run fit? Training memory estimated before any model is built, checked against the machine.

A model too wide for the machine should fail with one line naming the estimate, not with an
allocator traceback after the run folder was written (or, worse, by the OOM killer). At the peak
of upstream training these live at once, all fp32 (4 bytes a number):

    parameters        the routed model, the dense base it was upcycled from, and in two-stage
                      training the stage-1 model whose router stage 2 keeps; counted exactly by
                      building the models on torch's "meta" device (shapes, no storage)
    optimizer state   gradients and AdamW's two moments: 3 numbers per trained parameter
    activations       what backward needs, per sequence of s source and t target tokens
                      (s = t = max_len, the longest a batch pads to), h heads, d width, f FFN
                      width, v vocabulary:
                        encoder layer  s·(10·d + 2·f) + h·s·s      (LayerNorms, q k v, attention
                                                                    weights, FFN hidden, residuals)
                        decoder layer  t·(15·d + 2·f) + h·t·(t + s) + 2·d·s   (+ cross-attention)
                        output head    3·t·v                       (logits, log-softmax, their grad)
                      times the batch (the larger of batch_size and fs_batch_size), and every
                      routed position counted once per expert: soft routing runs them all.

It is an upper bound of the arrays, not of torch's allocator slack: a run refused here could not
have finished, and one that nearly fits is refused rather than killed mid-way.
Read next: `minimoe/runner.py` (which calls `check_memory` before writing anything).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from minimoe.config import Config, RouterConfig
from minimoe.device import resolve_device
from minimoe.errors import ConfigError
from minimoe.model import routed_flags
from minimoe.upcycle import build_model

BYTES = 4  # fp32 weights, gradients, moments and (an upper bound under bf16 autocast) activations


def _numbers(cfg: Config, vocab_size: int, n_tasks: int) -> int:
    """Parameters and buffers of the model cfg describes, counted without allocating them."""
    with torch.device("meta"):
        model = build_model(dataclasses.replace(cfg.model, vocab_size=vocab_size), cfg.router, n_tasks)
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


def activation_numbers(cfg: Config, vocab_size: int) -> int:
    """Numbers kept for backward by one training step at the configured batch (module docstring)."""
    m = cfg.model
    d, f, h, s = m.d_model, m.d_ff, m.n_heads, m.max_len
    enc_routed, dec_routed = routed_flags(m)
    encoder = sum((m.n_experts if r else 1) * (s * (10 * d + 2 * f) + h * s * s) for r in enc_routed)
    decoder = sum((m.n_experts if r else 1) * (s * (15 * d + 2 * f) + h * s * 2 * s + 2 * d * s) for r in dec_routed)
    return max(cfg.train.batch_size, cfg.train.fs_batch_size) * (encoder + decoder + 3 * s * vocab_size)


def estimate(cfg: Config, vocab_size: int, n_tasks: int) -> dict[str, int]:
    """Bytes at the peak of training the method cfg describes (a `pipeline.method_config`):
    {"parameters", "optimizer", "activations", "total"}."""
    dense = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_experts=1),
                                router=RouterConfig(routing="dense"))
    trained = _numbers(cfg, vocab_size, n_tasks)
    kept = _numbers(dense, vocab_size, 1) + (trained if cfg.router.two_stage else 0)
    out = {"parameters": BYTES * (trained + kept), "optimizer": BYTES * 3 * trained,
           "activations": BYTES * activation_numbers(cfg, vocab_size)}
    out["total"] = sum(out.values())
    return out


def available_bytes(device: torch.device) -> int | None:
    """Free memory where the model will live: the GPU's free memory, else RAM the OS can give
    (MemAvailable, capped by a cgroup limit inside a container); None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:  # no /proc (macOS, BSD): the physical memory, an upper bound of what is free
        try:
            free = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            pass
    try:  # a container's limit (cgroup v2) is what the OOM killer enforces
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free if free is not None else int(limit), int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_memory(cfgs: list[Config], vocab_size: int, n_tasks: int, processes: int = 1) -> None:
    """ConfigError, with the estimate, when the largest of the runs `cfgs` (method configs) times
    `processes` running at once needs more memory than the device has free. Also resolves the
    device, so `--device=cuda` without CUDA fails here too, before anything is written."""
    device = resolve_device(cfgs[0].train.device)
    free = available_bytes(device)
    if free is None:
        return
    need, cfg = max(((estimate(c, vocab_size, n_tasks), c) for c in cfgs), key=lambda ec: ec[0]["total"])
    if need["total"] * processes <= free:
        return
    m, t = cfg.model, cfg.train
    times = f" × {processes} processes at once" if processes > 1 else ""
    raise ConfigError(
        f"training needs about {_gib(need['total'])}{times} (parameters {_gib(need['parameters'])}, optimizer "
        f"state {_gib(need['optimizer'])}, activations {_gib(need['activations'])} at batch_size={t.batch_size}, "
        f"d_model={m.d_model}, d_ff={m.d_ff}, n_experts={m.n_experts}, max_len={m.max_len}) but {device} has "
        f"{_gib(free)} free; lower --d_model, --d_ff, --n_experts, --max_len, --batch_size"
        + (", --jobs" if processes > 1 else "") + " or use a machine with more memory.")
