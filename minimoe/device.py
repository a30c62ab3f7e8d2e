"""Device choice, CUDA fast paths and the CPU fallback.

One place decides where tensors live and which speed tricks are on:
- `resolve_device("auto")` → CUDA when present, else CPU; asking for CUDA without it is a
  `DeviceError` naming the fix, not a traceback from deep inside torch.
- Fused AdamW wherever torch has it (`make_optimizer`: CUDA, and CPU from torch 2.4).
- On CUDA: bf16 autocast (`autocast_context`) and optional `torch.compile` (`maybe_compile`);
  on CPU: fp32.
- `set_threads(n)` fixes the CPU thread count (0 keeps torch's default).

Read next: `minimoe/checkpoint.py`.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch

from minimoe.errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' → torch.device, checked against this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device={name} was requested but this machine has no CUDA device "
                              f"(torch {torch.__version__}, cuda build: {torch.version.cuda}). "
                              "Use --device=cpu or --device=auto.")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device={name}: only {torch.cuda.device_count()} CUDA device(s) "
                              f"exist; use cuda:0 … cuda:{torch.cuda.device_count() - 1}.")
        return torch.device("cuda", index)
    raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.")


def set_threads(n: int) -> None:
    """Use n CPU threads for intra-op parallelism (0 = leave torch's default)."""
    if n > 0:
        torch.set_num_threads(n)


def autocast_context(device: torch.device):
    """bf16 autocast on CUDA (halves activation memory, uses tensor cores); fp32 on CPU.

    CPU bf16 autocast exists but is slower than fp32 on most CPUs without AMX, so it stays off.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(groups: Iterable[dict], device: torch.device, weight_decay: float = 0.0):
    """AdamW with the fused kernel (one pass over all parameters) on CUDA and, from torch 2.4,
    on CPU too: measured on 2 cores, the step of a 3-expert model went from 13.7 to 2.5 ms."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    fused = device.type == "cuda" or (device.type == "cpu" and (major, minor) >= (2, 4))
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(list(groups), weight_decay=weight_decay, **kwargs)


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """torch.compile the model when asked (mostly worth it on CUDA; data-dependent expert
    grouping causes graph breaks, which compile handles by falling back to eager there)."""
    return torch.compile(model) if enabled else model


def describe(device: torch.device) -> str:
    """One line about the hardware, for logs and benchmark tables."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads, torch {torch.__version__}"
