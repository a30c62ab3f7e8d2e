"""Expert pools: m complete transformer layers at one position, mixed by per-row gates.

The paper's expert layers (lessons/paper_facts.md, "Architecture"): each routed position holds m
layers f_1 … f_m and computes, for every example i of the batch, y_i = Σ_e gates[i, e] · f_e(x_i).
Soft routing gives dense gates (every expert runs); hard routing gives one-hot gates, and an
expert whose gate is exactly 0 skips that row, so a one-hot batch costs about one dense layer.
`run_all=True` runs every expert anyway: the exact ("full") straight-through mode.

Any gates, in three steps (exercises 3.1/3.2): `group_rows` (the rows each expert needs) →
`dispatch` (each expert once, on its rows) → `combine` (the weighted sum). This file is the
reference; `minimoe/fastpool.py::FastExpertPool` computes the same sum faster for one-hot gates
and is tested equal to it. Read next: `minimoe/router.py`, then `minimoe/model.py`.
Shapes (legend in `minimoe/__init__.py`): x [b ...] (e.g. [b t d]), gates [b e],
rows of expert e: LongTensor [m_e] with m_e ≤ b, expert output [m_e ...].
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from minimoe.errors import ConfigError


def group_rows(gates: Tensor, run_all: bool = False) -> list[Tensor]:
    """For each expert, the batch rows it must run on: those with a nonzero gate.

    gates [b e] -> list of e LongTensors, the e-th holding row indices [m_e] (ascending).
    run_all=True gives every expert every row (the 'full' straight-through mode).
    """
    b, n_experts = gates.shape
    if run_all:
        return [torch.arange(b, device=gates.device)] * n_experts
    # BEGIN EXERCISE 3.2: group rows by expert
    # HINT: `gates != 0` is a bool [b e] table of who needs whom; take one column per expert.
    # HINT: torch.nonzero(column).flatten() turns a bool column [b] into row indices [m_e].
    # HINT: compare with exactly 0: a tiny gate is still a gate (soft routing must stay exact).
    used = gates.detach() != 0  # [b e]
    return [torch.nonzero(used[:, e]).flatten() for e in range(n_experts)]
    # END EXERCISE 3.2


def per_row(value, b: int) -> bool:
    """Is this ctx value per example (a tensor with leading dim b)?"""
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == b


def slice_rows(ctx: dict, rows: Tensor, b: int) -> dict:
    """Keep only `rows` (sorted, unique) of every per-example ctx tensor (leading dim b):
    src_pad [b s] -> [m s], memory [b s d] -> [m s d]; other values pass as is. All rows
    (task-level routing of a one-task batch) copies nothing."""
    if rows.numel() == b:
        return dict(ctx)
    return {name: value.index_select(0, rows) if per_row(value, b) else value
            for name, value in ctx.items()}


def dispatch(x: Tensor, rows: list[Tensor], experts: list[nn.Module],
             ctx: dict) -> list[Tensor | None]:
    """Run expert e on its rows only: x [b ...] -> outputs [m_e ...] (None where m_e = 0).
    Each expert runs at most once, so the work is Σ_e m_e rows — b in all for one-hot gates."""
    b = x.shape[0]
    outs: list[Tensor | None] = []
    for expert, rows_e in zip(experts, rows):
        if rows_e.numel() == 0:
            outs.append(None)  # no row wants this expert: skip it entirely
            continue
        x_e = x if rows_e.numel() == b else x.index_select(0, rows_e)  # [m_e ...]
        outs.append(expert(x_e, **slice_rows(ctx, rows_e, b)))
    return outs


def scale_rows(weights: Tensor, out: Tensor) -> Tensor:
    """weights [m] · out [m ...] row by row → [m ...], in out's dtype.

    A broadcast multiply, not `einsum(weights, out, "m, m ... -> m ...")`: under CUDA autocast
    einsum runs in bf16, which would round every expert output (and the residual stream) to bf16.
    """
    return out * weights.to(out.dtype).reshape(-1, *[1] * (out.dim() - 1))


def combine(expert_outs: list[Tensor | None], rows: list[Tensor], gates: Tensor) -> Tensor:
    """The soft mixture: y_i = Σ_e gates[i, e] · f_e(x_i), from grouped outputs.

    expert_outs[e] [m_e ...] holds f_e(x_i) for the rows rows[e] [m_e] (None = skipped);
    gates [b e]. Returns y [b ...]; rows no expert ran on stay 0.
    A gate of exactly 1 and zeros elsewhere gives exactly f_e(x_i): 0 + 1·y rounds to y.
    """
    b = gates.shape[0]
    first = next(out for out in expert_outs if out is not None)
    # BEGIN EXERCISE 3.1: weighted sum of expert outputs
    # HINT: start from zeros of shape (b, *first.shape[1:]) with first's dtype and device.
    # HINT: expert_outs[e] is None when no row chose expert e: skip it (its rows get nothing).
    # HINT: the weights of expert e are gates[rows[e], e] [m_e]; scale its outputs with
    # HINT: scale_rows(weights, out) (above) and add them into y at rows[e]
    # HINT: (Tensor.index_add, not the in-place version, so autograd sees every step).
    y = first.new_zeros((b, *first.shape[1:]))  # [b ...]
    for e, (rows_e, out_e) in enumerate(zip(rows, expert_outs)):
        if out_e is None:
            continue
        weights = gates[rows_e, e]  # [m_e]; gradient flows to these gates only
        y = y.index_add(0, rows_e, scale_rows(weights, out_e).to(y.dtype))
    return y
    # END EXERCISE 3.1


class ExpertPool(nn.Module):
    """m expert layers at one routed position, mixed per row by `gates` (module docstring).

    forward(x [b ...], gates [b e], run_all=False, **ctx) -> y [b ...], y[i] = Σ_e gates[i, e] ·
    expert_e(x[i], **ctx[i]): ctx tensors with leading dim b (src_pad [b s], memory [b s d]) are
    row-sliced. run_all=True: every gate gets its exact gradient ⟨∂L/∂y_i, f_e(x_i)⟩.
    """

    def __init__(self, experts: list[nn.Module]):
        super().__init__()
        if len(experts) == 0:
            raise ConfigError("an ExpertPool needs at least one expert; use --n_experts >= 1.")
        self.experts = nn.ModuleList(experts)

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def check_gates(self, x: Tensor, gates: Tensor) -> None:
        if gates.shape != (x.shape[0], self.n_experts):
            raise ValueError(f"gates has shape {tuple(gates.shape)}; expected [b e] = "
                             f"({x.shape[0]}, {self.n_experts}) for x of shape {tuple(x.shape)}.")

    def forward(self, x: Tensor, gates: Tensor, run_all: bool = False, **ctx) -> Tensor:
        self.check_gates(x, gates)
        rows = group_rows(gates, run_all)
        outs = dispatch(x, rows, list(self.experts), ctx)
        if all(out is None for out in outs):  # every gate is 0: the mixture is 0
            return torch.zeros_like(x)
        return combine(outs, rows, gates)

    @classmethod
    def upcycle(cls, layer: nn.Module, n_experts: int, noise_std: float,
                generator: torch.Generator | None = None, **options) -> "ExpertPool":
        """m deep copies of a (pre-trained) dense layer, each parameter plus N(0, noise_std²).

        The noise breaks the symmetry so that the copies can specialise; noise_std=0 gives
        exact copies, whose mixture under any gates summing to 1 equals the dense layer.
        `layer` is left untouched (the paper upcycles BART with noise eps 1e-8). `options` go to
        the constructor (e.g. FastExpertPool's `path`).
        """
        if n_experts < 1 or noise_std < 0:
            raise ConfigError(f"upcycling needs n_experts >= 1 and noise_std >= 0 (0 = exact copies); "
                              f"got n_experts={n_experts}, noise_std={noise_std}.")
        experts = [copy.deepcopy(layer) for _ in range(n_experts)]
        if noise_std > 0:
            with torch.no_grad():  # an initialisation, not part of any graph
                for expert in experts:
                    for param in expert.parameters():
                        noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
                        param.add_(noise.to(param.device) * noise_std)
        return cls(experts, **options)
