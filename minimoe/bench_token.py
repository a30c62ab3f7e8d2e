"""What token-level routing costs: a `TokenMoEFFN` step beside a dense FFN step, in one process.

`token_ffn_step_ratio()` times forward + backward of one FFN block on `tokens` tokens: the dense
pre-LN `FeedForwardBlock` and the token-routed `TokenMoEFFN` (router, top-k, grouping per
expert, aux losses) with the same width per expert. With k = 1 both do the same FFN FLOPs, so
the ratio is the price of routing itself. If the `mixture-of-experts` package (lucidrains'
compact top-2 layer, `from mixture_of_experts import MoE`) is importable, its layer is timed too
at equal e and f; it is never installed by minimoe, and skipped cleanly when absent.

Timing as in `minimoe/bench.py`: warm-up, then rounds in alternating order, medians over rounds
and the ratio as the median of per-round ratios (`minimoe/flops.py`), so load from other
processes cancels. Uses the current torch thread count. Called by `minimoe bench`.
Read next: `lessons/` (lesson 09, task-level vs token-level routing).
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch
from torch import nn

from minimoe.config import ModelConfig
from minimoe.flops import paired, time_interleaved
from minimoe.layers import FeedForwardBlock
from minimoe.token_router import TokenMoEFFN


def _step(block: nn.Module, x: torch.Tensor, aux: Callable[[], torch.Tensor | float]) -> Callable[[], None]:
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
    fns = {"dense": _step(dense, x, lambda: 0.0),
           "token": _step(token, x, lambda: token.take_aux_loss(1e-2, 1e-3))}
    build_package = _moe_package(d_model, d_ff, n_experts)
    if build_package is not None:
        package = build_package(x)
        fns["moe_package"] = _step(package, x, lambda: 0.0)
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


if __name__ == "__main__":  # python -m minimoe.bench_token
    import json

    torch.set_num_threads(1)
    print(json.dumps(token_ffn_step_ratio(), indent=2))
