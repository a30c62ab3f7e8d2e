"""Expert pools: m complete transformer layers at one position, mixed by per-row gates.

Implements the paper's expert layers (lessons/paper.md, "Architecture"): each routed
position holds m layers f_1 … f_m and computes, for every example i of the batch,

    y_i = Σ_e gates[i, e] · f_e(x_i)

Soft routing gives dense gates (every expert runs). Hard routing gives one-hot gates, and an
expert whose gate is exactly 0 is skipped: rows are grouped per expert, so a one-hot batch
costs about one dense layer however many experts there are. `run_all=True` runs every expert
anyway — the exact ("full") straight-through mode, where gradients reach every gate.

Implementations of the same sum, one concept each:
- `group_rows` → `dispatch` → `combine`: the general case (any gates). Readable, exercises 3.1/3.2.
- `sort_rows` → `dispatch_sorted`: the speed path for one-hot gates (hard routing). The batch
  is permuted once so that each expert's rows are contiguous, experts run on views of it,
  and one gather puts the rows back: 2 copies of x per position instead of 1 + 2m
  (m index_adds into a full-size output). Measured in lesson 09 / `minimoe bench`.
- the same sorted batch through `minimoe/grouped.py::GroupedTwin`: one grouped-GEMM call per
  Linear for all experts instead of m calls — the default where that kernel exists (CUDA bf16);
  `ExpertPool.path` picks (see `choose_path`).
Read next: `minimoe/router.py` (where the gates come from), then `minimoe/model.py`.

Shapes (legend in `minimoe/__init__.py`): x [b ...] (e.g. [b t d]), gates [b e],
rows of expert e: LongTensor [m_e] with m_e ≤ b, expert output [m_e ...].
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from minimoe.errors import ConfigError
from minimoe.grouped import GroupedTwin, grouped_dtype, grouped_mm_works


def group_rows(gates: Tensor, run_all: bool = False) -> list[Tensor]:
    """For each expert, the batch rows it must run on: those with a nonzero gate.

    gates [b e] -> list of e LongTensors, the e-th holding row indices [m_e] (ascending).
    run_all=True gives every expert every row (the 'full' straight-through mode).
    Deviations: none; this grouping is what makes hard routing cost ≈ one dense layer.
    """
    b, n_experts = gates.shape
    if run_all:
        every_row = torch.arange(b, device=gates.device)
        return [every_row for _ in range(n_experts)]
    # BEGIN EXERCISE 3.2: group rows by expert
    # HINT: `gates != 0` is a bool [b e] table of who needs whom; take one column per expert.
    # HINT: torch.nonzero(column).flatten() turns a bool column [b] into row indices [m_e].
    # HINT: compare with exactly 0: a tiny gate is still a gate (soft routing must stay exact).
    used = gates.detach() != 0  # [b e]
    return [torch.nonzero(used[:, e]).flatten() for e in range(n_experts)]
    # END EXERCISE 3.2


def _per_row(value, b: int) -> bool:
    """Is this ctx value per example (a tensor with leading dim b)?"""
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == b


def slice_rows(ctx: dict, rows: Tensor, b: int, keep_all: bool = True) -> dict:
    """Keep only `rows` of every per-example ctx tensor (leading dim b): src_pad [b s] ->
    [m s], memory [b s d] -> [m s d]. Other values (ints, None, shared tensors) pass as is.

    All rows in ascending order is the common case (task-level routing of a one-task batch):
    then nothing is copied (keep_all=True; `rows` must then be sorted and unique — pass
    keep_all=False for a permutation of all rows).
    """
    if keep_all and rows.numel() == b:  # rows are sorted and unique, so this means "all rows"
        return dict(ctx)
    return {name: value.index_select(0, rows) if _per_row(value, b) else value
            for name, value in ctx.items()}


def dispatch(x: Tensor, rows: list[Tensor], experts: list[nn.Module],
             ctx: dict) -> list[Tensor | None]:
    """Run expert e on its rows only: x [b ...] -> outputs [m_e ...] (None where m_e = 0).

    Each expert is called at most once, on a contiguous block of its rows (index_select),
    so the work is Σ_e m_e rows — b rows in all for one-hot gates.
    """
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
    Deviations: none (paper eq. for the soft mixture; hard routing is the one-hot case).
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


def sort_rows(gates: Tensor) -> tuple[Tensor, list[int], Tensor] | None:
    """For one-hot gates (exactly one nonzero per row): the permutation that groups rows by
    expert, the row count of each expert and each row's expert, `(order [b], counts,
    expert_of [b])`; None for other gates.

    A stable sort keeps rows of one expert in batch order; a one-expert batch gets the
    identity permutation (and `dispatch_sorted` then copies nothing).
    """
    used = gates.detach() != 0  # [b e]
    if not bool((used.sum(1) == 1).all()):  # soft gates, or a row with no expert at all
        return None
    expert_of = used.to(torch.int8).argmax(1)  # [b]: the one expert of each row
    order = torch.argsort(expert_of, stable=True)  # [b]
    return order, torch.bincount(expert_of, minlength=gates.shape[1]).tolist(), expert_of


def dispatch_sorted(x: Tensor, gates: Tensor, order: Tensor, counts: list[int], expert_of: Tensor,
                    experts: list[nn.Module], ctx: dict, twin: GroupedTwin | None = None) -> Tensor:
    """y_i = gates[i, e_i] · f_{e_i}(x_i) for one-hot gates, with rows permuted once.

    x [b ...], gates [b e], (order [b], counts, expert_of [b]) from `sort_rows` → y [b ...]. Equals
    `combine(dispatch(...))` exactly: each row is computed by the same expert, and 0 + g·f
    (combine) is g·f. The gate multiply keeps the straight-through gradient of hard routing.
    twin: run the sorted rows through `minimoe/grouped.py` (one call per operator for all
    experts; equal up to summation order) instead of one call per expert.
    """
    b = x.shape[0]
    if max(counts) == b:  # one expert takes every row: no permutation, no copies
        e = counts.index(b)
        return scale_rows(gates[:, e], experts[e](x, **ctx))
    x_sorted, ctx_sorted = x.index_select(0, order), slice_rows(ctx, order, b, keep_all=False)
    if twin is not None:
        y_cat = twin(x_sorted, counts, experts[0].training, **ctx_sorted)
    else:
        blocks, start = [], 0
        for expert, count in zip(experts, counts):
            if count:  # rows start … start+count-1 of the sorted batch: views, no copies
                part = slice(start, start + count)
                blocks.append(expert(x_sorted[part], **{k: v[part] if _per_row(v, b) else v
                                                        for k, v in ctx_sorted.items()}))
                start += count
        y_cat = torch.cat(blocks)
    gate = gates.gather(1, expert_of[:, None])[:, 0]  # [b]: each row's one nonzero gate
    y_sorted = scale_rows(gate.index_select(0, order), y_cat)
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(b, device=order.device))
    return y_sorted.index_select(0, inverse)  # row i back at position i


class ExpertPool(nn.Module):
    """m expert layers at one routed position, mixed per row by `gates` (see module docstring).

    forward(x [b ...], gates [b e], run_all=False, **ctx) -> [b ...]:
        y[i] = Σ_e gates[i, e] · expert_e(x[i], **ctx[i]), where ctx tensors with leading
        dim b (src_pad [b s], memory [b s d]) are row-sliced and other values passed as is.
    Experts with gate exactly 0 on a row skip that row; run_all=True runs all of them
    (every gate then gets its exact gradient ⟨∂L/∂y_i, f_e(x_i)⟩).
    """

    # How one-hot gates run (the bench's A/B switch): "auto" (grouped where a grouped-GEMM kernel
    # runs, else sorted), "sorted", "grouped" or "general" (group_rows → dispatch → combine).
    path = "auto"

    def __init__(self, experts: list[nn.Module]):
        super().__init__()
        if len(experts) == 0:
            raise ConfigError("an ExpertPool needs at least one expert; use --n_experts >= 1.")
        self.experts = nn.ModuleList(experts)

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def choose_path(self, x: Tensor) -> str:
        """"sorted", "grouped" or "general" for one-hot gates on x (see `path`)."""
        if self.path not in ("auto", "sorted", "grouped", "general"):
            raise ConfigError(f"ExpertPool.path={self.path!r} must be auto, sorted, grouped or general.")
        if self.path == "grouped" and not grouped_mm_works(x.device.type, grouped_dtype(x)):
            raise ConfigError(f"ExpertPool.path='grouped' needs torch._grouped_mm for {x.device.type} "
                              f"{grouped_dtype(x)} (torch >= 2.8; bf16 on CUDA wants a Hopper-class "
                              f"GPU), which this torch {torch.__version__} lacks; use path='auto'.")
        if self.path != "auto":
            return self.path
        # auto: CUDA only — PyTorch's CPU _grouped_mm is a loop of matmuls (minimoe/grouped.py)
        if x.is_cuda and grouped_mm_works(x.device.type, grouped_dtype(x)) and self.twin() is not None:
            return "grouped"
        return "sorted"

    def twin(self) -> GroupedTwin | None:
        """The grouped twin of these experts, built once; None if they cannot be grouped."""
        cached = self.__dict__.get("_twin")  # a plain attribute: not a submodule, no parameters
        if cached is None or (cached and cached.experts_ids != tuple(id(e) for e in self.experts)):
            try:
                cached = GroupedTwin(list(self.experts))
            except ValueError:
                cached = False  # remembered: these experts keep the sorted path
            self.__dict__["_twin"] = cached
        return cached or None

    def forward(self, x: Tensor, gates: Tensor, run_all: bool = False, **ctx) -> Tensor:
        if gates.shape != (x.shape[0], self.n_experts):
            raise ValueError(f"gates has shape {tuple(gates.shape)}; expected [b e] = "
                             f"({x.shape[0]}, {self.n_experts}) for x of shape {tuple(x.shape)}.")
        path = "general" if run_all else self.choose_path(x)
        sorted_rows = None if path == "general" else sort_rows(gates)
        if sorted_rows is not None:  # hard routing: the speed path (module docstring)
            twin = self.twin() if path == "grouped" else None
            if path == "grouped" and twin is None:
                raise ConfigError("ExpertPool.path='grouped': these experts hold parameters outside "
                                  "Linear/LayerNorm (minimoe/grouped.py); use path='sorted'.")
            return dispatch_sorted(x, gates, *sorted_rows, list(self.experts), ctx, twin)
        rows = group_rows(gates, run_all)
        outs = dispatch(x, rows, list(self.experts), ctx)
        if all(out is None for out in outs):  # every gate is 0: the mixture is 0
            return torch.zeros_like(x)
        return combine(outs, rows, gates)

    @classmethod
    def upcycle(cls, layer: nn.Module, n_experts: int, noise_std: float,
                generator: torch.Generator | None = None) -> "ExpertPool":
        """m deep copies of a (pre-trained) dense layer, each parameter plus N(0, noise_std²).

        The noise breaks the symmetry so that the copies can specialise; noise_std=0 gives
        exact copies, whose mixture under any gates summing to 1 equals the dense layer.
        `layer` itself is left untouched. Deviations: none (the paper upcycles BART layers with
        noise eps 1e-8; the std is a parameter so that its effect can be measured).
        """
        if n_experts < 1:
            raise ConfigError(f"n_experts={n_experts} must be >= 1 to upcycle a layer.")
        if noise_std < 0:
            raise ConfigError(f"noise_std={noise_std} must be >= 0 (0 = exact copies).")
        experts = [copy.deepcopy(layer) for _ in range(n_experts)]
        if noise_std > 0:
            with torch.no_grad():  # an initialisation, not part of any graph
                for expert in experts:
                    for param in expert.parameters():
                        noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
                        param.add_(noise.to(param.device) * noise_std)
        return cls(experts)
