"""Grouped execution of an expert pool: every operator runs once for all experts' rows.

The sorted path of `minimoe/fastpool.py` calls each of the m experts on its block of rows, so a
hard-routed mixed-task batch launches m× the operators of a dense layer. Where a *grouped GEMM*
kernel exists (one call multiplies each block of rows by its own expert's weight), the whole
pool can run as one layer instead:

- every `nn.Linear` of the expert becomes `GroupedLinear`: one `torch._grouped_mm` of the
  sorted rows [N in] by the stacked weights [e in out], where N = rows × positions and block g
  holds expert g's rows, plus each row's own bias;
- every `nn.LayerNorm` becomes `GroupedLayerNorm`: one normalisation, then each row's own
  scale and shift;
- everything without parameters (attention, GELU, dropout, residual adds) runs once on all
  rows, as in a dense layer: it treats rows independently.

`GroupedTwin` builds this from the experts themselves: a copy of expert 0's *code* (its module
tree) whose Linear and LayerNorm modules read the parameters of all m experts at call time.
The twin holds no parameters of its own, so training, checkpoints, `.to()` and extraction see
only the experts; the same rows get the same arithmetic as the sorted path, summed in another
order (tests/test_fastpool.py checks values and gradients).

When it pays (measured in `minimoe bench`, lesson 09): on CUDA with bf16 (Hopper's grouped GEMM
kernel), where the sorted path is launch-bound (m× the kernels). PyTorch's CPU build implements
`_grouped_mm` as a loop of matmuls (float32/bf16 only, not float64), so on CPU this path does
the same matmul calls plus stacking the weights, and the sorted path stays the default there.

Shapes (legend in `minimoe/__init__.py`): x [b ...] sorted so that each expert's rows are
contiguous (`minimoe/fastpool.py::sort_rows`), `counts` the rows per expert.
Deviations from the paper: none (the same function, computed in one pass).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def grouped_dtype(x: Tensor) -> torch.dtype:
    """The dtype a Linear would compute in here: autocast's on CUDA when it is on, else x's."""
    if x.is_cuda and torch.is_autocast_enabled():
        if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
            return torch.get_autocast_dtype("cuda")
        return torch.get_autocast_gpu_dtype()
    return x.dtype


@lru_cache(maxsize=None)
def grouped_mm_works(device_type: str, dtype: torch.dtype) -> bool:
    """Does `torch._grouped_mm` run forward and backward here, for this dtype? Probed once.

    It is a private PyTorch op (from torch 2.8): CUDA needs a Hopper-class GPU for bf16, CPU
    takes float32/bf16. False on any error, so callers fall back to the sorted path.
    """
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:  # the first call may come from inside no_grad / inference_mode / autocast: step out
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type, enabled=False):
            return _probe(torch.device(device_type), dtype)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return False


def _probe(device: torch.device, dtype: torch.dtype) -> bool:
    """Two groups of rows through `_grouped_mm`, forward and backward, against plain matmuls."""
    # fixed numbers, no RNG: probing must not shift the random streams training draws from
    a = torch.linspace(-1, 1, 32 * 16, device=device).reshape(32, 16).to(dtype).requires_grad_()
    w = torch.linspace(1, -1, 2 * 16 * 16, device=device).reshape(2, 16, 16).to(dtype)
    w = w.transpose(-2, -1).requires_grad_()
    offs = torch.tensor([8, 32], device=device, dtype=torch.int32)
    y = torch._grouped_mm(a, w, offs=offs)
    y.backward(torch.ones_like(y))
    reference = torch.cat([a[:8] @ w[0], a[8:] @ w[1]])
    return bool(torch.allclose(y.float(), reference.float(), atol=1e-1, rtol=1e-2))


@dataclass
class RowGroups:
    """How the sorted rows of one pool call split into experts (shared by its grouped modules).

    Only experts with rows take part (`used`): an expert no row chose gets no gradient at all
    (None, as on the sorted path), so AdamW leaves it alone. b rows; ends[g] = rows of used
    experts 0 … g (cumulative, on the host); group [b] = each row's position in `used`.
    """

    b: int = 0
    used: list[int] = field(default_factory=list)
    ends: Tensor | None = None
    group: Tensor | None = None
    _offsets: dict = field(default_factory=dict)

    def set(self, counts: list[int], device: torch.device) -> None:
        self.b, self.used = sum(counts), [e for e, c in enumerate(counts) if c]
        used_counts = torch.tensor([counts[e] for e in self.used])
        self.ends = used_counts.cumsum(0)
        self.group = torch.repeat_interleave(torch.arange(len(self.used)), used_counts).to(device)
        self._offsets = {}

    def offsets(self, per_row: int, device: torch.device) -> Tensor:
        """Block ends in units of positions: ends · per_row (a row of x [b s d] is s positions)."""
        if per_row not in self._offsets:
            self._offsets[per_row] = (self.ends * per_row).to(device=device, dtype=torch.int32)
        return self._offsets[per_row]

    def stack(self, tensors: list[Tensor], dtype: torch.dtype | None = None,
              pairs: bool = False) -> Tensor:
        """The used experts' parameters, stacked in one call: tensors (one per expert) → [e' ...]
        (e' = len(used)); pairs=True: tensors = m firsts then m seconds → [2 e' ...]."""
        m = len(tensors) // 2 if pairs else len(tensors)
        picked = [tensors[e] for e in self.used] + ([tensors[m + e] for e in self.used] if pairs else [])
        stacked = torch.stack(picked)
        stacked = stacked.reshape(2, len(self.used), *stacked.shape[1:]) if pairs else stacked
        return stacked if dtype is None else stacked.to(dtype)


def _broadcast(rows_value: Tensor, x: Tensor) -> Tensor:
    """[b c] per-row values → [b 1 … 1 c] to broadcast against x [b … c]."""
    return rows_value.reshape(rows_value.shape[0], *[1] * (x.dim() - 2), rows_value.shape[-1])


class GroupedLinear(nn.Module):
    """m `nn.Linear`s as one: y[i] = x[i] W_{e_i}ᵀ + bias_{e_i}, for x [b … in] → [b … out]."""

    def __init__(self, linears: list[nn.Linear], groups: RowGroups):
        super().__init__()
        self.__dict__["linears"] = linears  # the experts' own modules, not registered here
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        g = self.groups
        dtype = grouped_dtype(x)
        weight = g.stack([lin.weight for lin in self.linears], dtype)  # [e' out in]
        flat = x.reshape(-1, x.shape[-1]).to(dtype)  # [N in], N = b · positions
        offs = g.offsets(flat.shape[0] // g.b, x.device)
        y = torch._grouped_mm(flat, weight.transpose(-2, -1), offs=offs)  # [N out]
        y = y.reshape(*x.shape[:-1], y.shape[-1])
        if self.linears[0].bias is None:
            return y
        bias = g.stack([lin.bias for lin in self.linears], dtype)  # [e' out]
        return y + _broadcast(bias.index_select(0, g.group), y)


class GroupedLayerNorm(nn.Module):
    """m `nn.LayerNorm`s as one: normalise every row, then each row's expert's scale and shift."""

    def __init__(self, norms: list[nn.LayerNorm], groups: RowGroups):
        super().__init__()
        self.__dict__["norms"] = norms
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        first, g = self.norms[0], self.groups
        y = F.layer_norm(x, first.normalized_shape, None, None, first.eps)
        if first.weight is None:
            return y
        affine = g.stack([n.weight for n in self.norms] + [n.bias for n in self.norms], pairs=True)
        scale, shift = affine.index_select(1, g.group).unbind(0)  # [b d] each: one gather for both
        return torch.addcmul(_broadcast(shift, y), y, _broadcast(scale, y))


class GroupedTwin:
    """Expert 0's module tree with Linear/LayerNorm swapped for grouped versions (docstring above).

    twin(x_sorted [b ...], counts, training, **ctx) → [b ...]: rows sorted by expert, the first
    counts[0] computed by expert 0, the next counts[1] by expert 1, …
    Raises ValueError for experts it cannot group (a parameter outside Linear and LayerNorm, a
    LayerNorm over several axes or with a scale but no shift, experts of different structure);
    `FastExpertPool` then keeps the sorted path.
    """

    def __init__(self, experts: list[nn.Module]):
        self.groups = RowGroups()
        self.module = copy.deepcopy(experts[0])
        trees = [dict(e.named_modules()) for e in experts]
        for name, module in list(self.module.named_modules()):
            for child_name, child in list(module.named_children()):
                path = f"{name}.{child_name}" if name else child_name
                same = [tree.get(path) for tree in trees]
                if any(type(m) is not type(child) for m in same):
                    raise ValueError(f"experts differ at {path!r}: cannot group them")
                if isinstance(child, nn.Linear):
                    setattr(module, child_name, GroupedLinear(same, self.groups))
                elif isinstance(child, nn.LayerNorm):
                    if len(child.normalized_shape) != 1 or (child.weight is None) != (child.bias is None):
                        raise ValueError(f"LayerNorm {path!r}: only last-axis, scale-and-shift norms group")
                    setattr(module, child_name, GroupedLayerNorm(same, self.groups))
        left = [name for name, _ in self.module.named_parameters()]
        if left:
            raise ValueError(f"parameters outside Linear/LayerNorm cannot be grouped: {left}")

    def __call__(self, x: Tensor, counts: list[int], training: bool, **ctx) -> Tensor:
        self.groups.set(counts, x.device)
        if self.module.training != training:  # dropout follows the pool's mode (walk only on a change)
            self.module.train(training)
        return self.module(x, **ctx)
