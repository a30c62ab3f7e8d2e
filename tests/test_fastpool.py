"""Tests of minimoe/fastpool.py: every speed path equals the reference pool of minimoe/experts.py.

Oracles: the sorted path (sort_rows → dispatch_sorted) equals group_rows → dispatch → combine
exactly, values and the gradients of x, ctx, gates and every parameter; the grouped path
(minimoe/grouped.py) equals the sorted one to float32 rounding (bf16 on CUDA); `path` picks the
path explicitly and a wrong choice names its fix. Run: `python -m pytest tests/test_fastpool.py -q`.
"""

import copy

import pytest
import torch
from torch import nn

from minimoe.config import ModelConfig
from minimoe.errors import ConfigError
from minimoe.experts import combine, dispatch, group_rows
from minimoe.fastpool import FastExpertPool, dispatch_sorted, sort_rows
from minimoe.grouped import grouped_mm_works
from minimoe.layers import DecoderLayer, EncoderLayer, FeedForwardBlock
from test_experts import B, D, T, Counting, Toy, data


def toy_pool(n_experts, seed=0):
    torch.manual_seed(seed)
    return FastExpertPool([Counting(Toy()) for _ in range(n_experts)]).double()


# --- the speed path for one-hot gates (sort_rows → dispatch_sorted) ---------------------------

def test_sort_rows_only_for_one_hot_gates():
    gates = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    order, counts, expert_of = sort_rows(gates)
    assert order.tolist() == [1, 3, 0, 2] and counts == [2, 2]  # stable: batch order kept
    assert expert_of.tolist() == [1, 0, 1, 0]
    assert sort_rows(torch.tensor([[0.5, 0.5], [1.0, 0.0]])) is None  # soft row
    assert sort_rows(torch.tensor([[0.0, 0.0], [1.0, 0.0]])) is None  # a row with no expert
    order, counts, _ = sort_rows(torch.tensor([[0.0, 1.0]] * 3))
    assert order.tolist() == [0, 1, 2] and counts == [0, 3]


@pytest.mark.exercise  # the general path is exercises 3.1 and 3.2
@pytest.mark.parametrize("kind", [EncoderLayer, DecoderLayer])
@pytest.mark.parametrize("choice", [[0, 2, 2, 0, 1], [1, 1, 1, 1, 1], [2, 0, 2, 0, 2]])
def test_sorted_path_equals_the_general_path_values_and_gradients(kind, choice):
    """dispatch_sorted == combine(dispatch(group_rows)) exactly: outputs and the gradients of
    x, ctx memory, gates (straight-through style: one-hot values that carry a gradient) and
    every expert parameter."""
    torch.manual_seed(0)
    pool = FastExpertPool([kind(ModelConfig(d_model=D, n_heads=2, d_ff=16, fused_attention="off"))
                       for _ in range(3)]).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, T if kind is DecoderLayer else 4, D, generator=g, dtype=torch.float64)
    memory = torch.randn(B, 4, D, generator=g, dtype=torch.float64)
    src_pad = torch.arange(4)[None, :] < torch.tensor([4, 1, 3, 2, 4])[:, None]  # [b s]
    w = torch.randn(x.shape, generator=g, dtype=torch.float64)

    def run(sorted_path: bool):
        pool.zero_grad()
        xs, mem = x.clone().requires_grad_(), memory.clone().requires_grad_()
        gates = torch.eye(3, dtype=torch.float64)[choice].requires_grad_()
        ctx = dict(src_pad=src_pad) if kind is EncoderLayer else dict(memory=mem, src_pad=src_pad)
        if sorted_path:
            y = dispatch_sorted(xs, gates, *sort_rows(gates), list(pool.experts), ctx)
        else:
            rows = group_rows(gates)
            y = combine(dispatch(xs, rows, list(pool.experts), ctx), rows, gates)
        (y * w).sum().backward()
        grads = [xs.grad, gates.grad] + ([mem.grad] if kind is DecoderLayer else [])
        return y, grads, [p.grad for p in pool.parameters()]

    (y1, g1, p1), (y0, g0, p0) = run(True), run(False)
    assert torch.equal(y1, y0)
    for a, b in zip(g1 + p1, g0 + p0):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.exercise
def test_one_hot_pool_takes_the_sorted_path_and_soft_does_not(monkeypatch):
    import minimoe.fastpool as fastpool

    used = []
    monkeypatch.setattr(fastpool, "dispatch_sorted", lambda *a: used.append("sorted") or dispatch_sorted(*a))
    pool = toy_pool(3)
    x, _, one_hot, soft = data(3)
    pool(x, one_hot)
    pool(x, soft)
    pool(x, one_hot, run_all=True)  # 'full' straight-through: every expert on every row
    assert used == ["sorted"]


# --- the grouped path (minimoe/grouped.py): one grouped-GEMM call per Linear --------------------

GROUPED_CPU = grouped_mm_works("cpu", torch.float32)
needs_grouped = pytest.mark.skipif(not GROUPED_CPU, reason="this torch has no CPU torch._grouped_mm")
CFG32 = ModelConfig(d_model=D, n_heads=2, d_ff=16, dropout=0.0)


def layer_case(kind, seed=3):
    """x, ctx and an output weighting for one kind of expert (float32: _grouped_mm has no float64)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "token_ffn":  # the token router's experts: nn.Sequential on rows = tokens [b d]
        return torch.randn(B * T, D, generator=g), {}
    x = torch.randn(B, T if kind is not EncoderLayer else 4, D, generator=g)
    src_pad = torch.arange(4)[None, :] < torch.tensor([4, 1, 3, 2, 4])[:, None]  # [b s]
    if kind is DecoderLayer:
        return x, dict(memory=torch.randn(B, 4, D, generator=g), src_pad=src_pad)
    return x, (dict(src_pad=src_pad) if kind is EncoderLayer else {})


def make_expert(kind):
    return FeedForwardBlock(CFG32).ffn if kind == "token_ffn" else kind(CFG32)


def run_path(pool, path, x, ctx, gates):
    """Output and every gradient (x, memory, gates, parameters) of one pool call on `path`."""
    pool.path = path
    pool.zero_grad()
    xs = x.clone().requires_grad_()
    ctx = {k: v.clone().requires_grad_() if v.is_floating_point() else v for k, v in ctx.items()}
    gates = gates.clone().requires_grad_()
    y = pool(xs, gates, **ctx)
    (y * torch.linspace(-1, 1, y.numel(), device=y.device).reshape(y.shape)).sum().backward()
    grads = [xs.grad, gates.grad] + [v.grad for v in ctx.values() if v.is_floating_point()]
    return [y] + grads + [p.grad for p in pool.parameters()]


@needs_grouped
@pytest.mark.exercise
@pytest.mark.parametrize("kind", [EncoderLayer, DecoderLayer, FeedForwardBlock, "token_ffn"])
@pytest.mark.parametrize("choice", [[0, 2, 2, 0, 1], [2, 0, 2, 0, 2]])
def test_grouped_path_equals_the_sorted_path_values_and_gradients(kind, choice):
    """Same rows, same experts, one call per operator: equal to float32 rounding (the sums run
    in another order), for every gradient — parameters of unused experts included (None)."""
    torch.manual_seed(0)
    pool = FastExpertPool([make_expert(kind) for _ in range(3)])
    x, ctx = layer_case(kind)
    rows = x.shape[0]
    gates = torch.eye(3)[(choice * rows)[:rows]]
    grouped, sorted_ = run_path(pool, "grouped", x, ctx, gates), run_path(pool, "sorted", x, ctx, gates)
    assert len(grouped) == len(sorted_)
    for a, b in zip(grouped, sorted_):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)


@needs_grouped
@pytest.mark.exercise
def test_grouped_twin_holds_no_parameters_and_follows_the_pool():
    """The twin is code, not weights: the pool's parameters and state_dict are unchanged, a
    deep copy computes with its own weights, and dropout follows pool.train() / pool.eval()."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=D, n_heads=2, d_ff=16, dropout=0.5)
    pool = FastExpertPool([EncoderLayer(cfg) for _ in range(3)])
    keys = list(pool.state_dict())
    x, ctx = layer_case(EncoderLayer)
    gates = torch.eye(3)[[0, 2, 2, 0, 1]]
    pool.path = "grouped"
    pool.eval()
    y = pool(x, gates, **ctx)
    assert list(pool.state_dict()) == keys and len(list(pool.parameters())) == 3 * len(list(pool.experts[0].parameters()))
    pool.path = "sorted"
    torch.testing.assert_close(y, pool(x, gates, **ctx), atol=2e-6, rtol=1e-5)  # eval: no dropout
    pool.path = "grouped"
    pool.train()
    assert not torch.equal(pool(x, gates, **ctx), pool(x, gates, **ctx))  # dropout is on again
    copy_ = copy.deepcopy(pool).eval()
    with torch.no_grad():
        for p in copy_.parameters():
            p.mul_(2.0)
    pool.eval()
    assert not torch.allclose(copy_(x, gates, **ctx), pool(x, gates, **ctx))
    torch.testing.assert_close(pool(x, gates, **ctx), y)  # the original still uses its own weights


def test_auto_path_is_sorted_on_cpu_and_bad_paths_name_the_fix(monkeypatch):
    import minimoe.fastpool as fastpool

    pool = toy_pool(3).float()
    x = torch.randn(B, T, D)
    assert pool.choose_path(x) == "sorted"  # CPU's _grouped_mm is a loop: no gain (grouped.py)
    pool.path = "fastest"
    with pytest.raises(ConfigError, match="auto, sorted, grouped or general"):
        pool.choose_path(x)
    pool.path = "grouped"  # Toy experts sit inside Counting wrappers: groupable Linear only
    monkeypatch.setattr(fastpool, "grouped_mm_works", lambda *a: False)
    with pytest.raises(ConfigError, match="torch._grouped_mm.*path='auto'"):
        pool.choose_path(x)


@needs_grouped
def test_experts_with_other_parameters_keep_the_sorted_path():
    class Scaled(Toy):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(D))  # not inside a Linear or LayerNorm

        def forward(self, x, **ctx):
            return super().forward(x) * self.scale

    pool = FastExpertPool([Scaled() for _ in range(2)])
    assert pool.twin() is None
    no_shift = FastExpertPool([nn.Sequential(nn.LayerNorm(D, bias=False)) for _ in range(2)])
    assert no_shift.twin() is None and no_shift.choose_path(torch.randn(B, T, D)) == "sorted"
    pool.path = "grouped"
    with pytest.raises(ConfigError, match="outside Linear/LayerNorm.*path='sorted'"):
        pool(torch.randn(B, T, D), torch.eye(2)[[0, 1, 0, 1, 1]])


@needs_grouped
def test_grouped_mm_probe_works_from_inside_no_grad_and_inference_mode():
    """The first call can come from an eval forward: the probe must not fail (and be cached
    as 'no kernel') just because gradients are off there."""
    for context in (torch.no_grad, torch.inference_mode):
        grouped_mm_works.cache_clear()
        rng = torch.get_rng_state()
        with context():
            assert grouped_mm_works("cpu", torch.float32) is True
        assert torch.equal(torch.get_rng_state(), rng)  # probing draws no random numbers
    grouped_mm_works.cache_clear()


def test_grouped_mm_probe_is_false_without_the_op(monkeypatch):
    grouped_mm_works.cache_clear()
    monkeypatch.delattr(torch, "_grouped_mm", raising=False)
    try:
        assert grouped_mm_works("cpu", torch.float32) is False
    finally:
        grouped_mm_works.cache_clear()


@pytest.mark.cuda
@pytest.mark.exercise
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", [EncoderLayer, DecoderLayer])
def test_cuda_grouped_path_matches_sorted_under_bf16_autocast(kind):
    """On CUDA under bf16 autocast (training's precision) the grouped path equals the sorted
    one to bf16 rounding, values and gradients; auto takes it where the kernel exists."""
    if not grouped_mm_works("cuda", torch.bfloat16):
        pytest.skip("this GPU/torch has no bf16 torch._grouped_mm")
    torch.manual_seed(0)
    pool = FastExpertPool([kind(ModelConfig(d_model=64, n_heads=4, d_ff=256, dropout=0.0))
                       for _ in range(3)]).cuda()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, 6, 64, generator=g).cuda()
    ctx = dict(memory=torch.randn(B, 4, 64, generator=g).cuda()) if kind is DecoderLayer else {}
    gates = torch.eye(3)[[0, 2, 2, 0, 1]].cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert pool.choose_path(x) == "grouped"
        grouped = run_path(pool, "grouped", x, ctx, gates)
        sorted_ = run_path(pool, "sorted", x, ctx, gates)
    for a, b in zip(grouped, sorted_):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=3e-2)
