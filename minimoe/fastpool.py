"""The speed paths of an expert pool: the same sum as `minimoe/experts.py`, faster for one-hot gates.

`minimoe/experts.py::ExpertPool` (group_rows → dispatch → combine) is the reference; the model
builds this subclass, whose `path` argument picks how hard-routed (one-hot) batches run:

- "sorted": `sort_rows` → `dispatch_sorted`. The batch is permuted once so that each expert's
  rows are contiguous, experts run on views of it, and one gather puts the rows back: 2 copies
  of x per position instead of 1 + 2m (m index_adds into a full-size output).
- "grouped": the same sorted batch through `minimoe/grouped.py::GroupedTwin`: one grouped-GEMM
  call per Linear for all experts instead of m calls (needs the kernel: CUDA bf16 on Hopper).
- "general": the reference path, for an A/B comparison (`minimoe bench`, lesson 09).
- "auto" (default): "grouped" where that kernel runs on CUDA, else "sorted" (PyTorch's CPU
  grouped GEMM is a loop of matmuls: no gain, see `minimoe/grouped.py`).

Soft gates and run_all=True always take the reference path. Every path is tested equal to the
reference, values and gradients (tests/test_fastpool.py).
Shapes (legend in `minimoe/__init__.py`): x [b ...], gates [b e], order [b], counts: e ints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minimoe.errors import ConfigError
from minimoe.experts import ExpertPool, per_row, scale_rows
from minimoe.grouped import GroupedTwin, grouped_dtype, grouped_mm_works

PATHS = ("auto", "sorted", "grouped", "general")


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
    x_sorted = x.index_select(0, order)
    ctx_sorted = {k: v.index_select(0, order) if per_row(v, b) else v for k, v in ctx.items()}
    if twin is not None:
        y_cat = twin(x_sorted, counts, experts[0].training, **ctx_sorted)
    else:
        blocks, start = [], 0
        for expert, count in zip(experts, counts):
            if count:  # rows start … start+count-1 of the sorted batch: views, no copies
                part = slice(start, start + count)
                blocks.append(expert(x_sorted[part], **{k: v[part] if per_row(v, b) else v
                                                        for k, v in ctx_sorted.items()}))
                start += count
        y_cat = torch.cat(blocks)
    gate = gates.gather(1, expert_of[:, None])[:, 0]  # [b]: each row's one nonzero gate
    y_sorted = scale_rows(gate.index_select(0, order), y_cat)
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(b, device=order.device))
    return y_sorted.index_select(0, inverse)  # row i back at position i


class FastExpertPool(ExpertPool):
    """An `ExpertPool` whose one-hot batches take the speed path `path` (module docstring).

    path: "auto", "sorted", "grouped" or "general"; an ordinary attribute, so a bench or a test
    may set it on one pool. The grouped twin (code, no parameters) is built on the first grouped
    call from the experts then in the pool; a deep copy of the pool copies it with the experts.
    """

    def __init__(self, experts: list[nn.Module], path: str = "auto"):
        super().__init__(experts)
        self.path = path
        self.grouped_twin: GroupedTwin | None | bool = None  # None: not built yet; False: cannot group

    def twin(self) -> GroupedTwin | None:
        """The grouped twin of these experts, built once; None if they cannot be grouped."""
        if self.grouped_twin is None:
            try:
                self.grouped_twin = GroupedTwin(list(self.experts))
            except ValueError:
                self.grouped_twin = False  # remembered: these experts keep the sorted path
        return self.grouped_twin or None

    def choose_path(self, x: Tensor) -> str:
        """"sorted", "grouped" or "general" for one-hot gates on x (see `path`)."""
        if self.path not in PATHS:
            raise ConfigError(f"FastExpertPool path={self.path!r} must be auto, sorted, grouped or general.")
        if self.path == "grouped" and not grouped_mm_works(x.device.type, grouped_dtype(x)):
            raise ConfigError(f"FastExpertPool path='grouped' needs torch._grouped_mm for {x.device.type} "
                              f"{grouped_dtype(x)} (torch >= 2.8; bf16 on CUDA wants a Hopper-class "
                              f"GPU), which this torch {torch.__version__} lacks; use path='auto'.")
        if self.path != "auto":
            return self.path
        # auto: CUDA only (the probe runs the kernel once, so it is not even tried on CPU)
        if x.is_cuda and grouped_mm_works(x.device.type, grouped_dtype(x)) and self.twin() is not None:
            return "grouped"
        return "sorted"

    def forward(self, x: Tensor, gates: Tensor, run_all: bool = False, **ctx) -> Tensor:
        self.check_gates(x, gates)
        path = "general" if run_all else self.choose_path(x)
        sorted_rows = None if path == "general" else sort_rows(gates)
        if sorted_rows is None:  # soft gates, run_all or path="general": the reference
            return super().forward(x, gates, run_all, **ctx)
        twin = self.twin() if path == "grouped" else None
        if path == "grouped" and twin is None:
            raise ConfigError("FastExpertPool path='grouped': these experts hold parameters outside "
                              "Linear/LayerNorm (minimoe/grouped.py); use path='sorted'.")
        return dispatch_sorted(x, gates, *sorted_rows, list(self.experts), ctx, twin)
