"""Tests of minimoe/experts.py: the expert pool against naive loops, in float64.

Oracles: a one-hot pool equals running the chosen expert alone on each row; a soft pool equals
the loop Σ_e g_e f_e(x); the gate gradient equals ⟨w_i, f_e(x_i)⟩ (all gates with run_all,
the chosen gate only without). Costs are counted with a wrapper: an expert whose gates are all
zero is never called, and each expert is called at most once per forward. Upcycling with no
noise reproduces the dense layer. Experts are tiny MLPs, and real Encoder/DecoderLayers
(for the row-slicing of ctx: memory, src_pad).

Exercise tests carry `ex3_1` / `ex3_2`; tests of the whole pool need both and carry only the
umbrella `exercise` marker. Run: `python -m pytest tests/test_experts.py -q`.
"""

import copy

import pytest
import torch
from torch import nn

from minimoe.config import ModelConfig
from minimoe.errors import ConfigError
from minimoe.experts import ExpertPool, combine, dispatch, dispatch_sorted, group_rows, slice_rows, sort_rows
from minimoe.grouped import grouped_mm_works
from minimoe.layers import DecoderLayer, EncoderLayer, FeedForwardBlock

TOL = dict(atol=1e-12, rtol=0)
B, T, D = 5, 3, 8


class Toy(nn.Module):
    """A small nonlinear expert x [b t d] -> [b t d] that ignores ctx, like a FeedForwardBlock."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, D)

    def forward(self, x, **ctx):
        return torch.tanh(self.lin(x))


class Counting(nn.Module):
    """Wraps an expert and records the number of rows of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, **ctx):
        self.calls.append(x.shape[0])
        return self.inner(x, **ctx)


def toy_pool(n_experts, seed=0):
    torch.manual_seed(seed)
    return ExpertPool([Counting(Toy()) for _ in range(n_experts)]).double()


def data(n_experts, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    choice = torch.randint(n_experts, (B,), generator=g)
    one_hot = torch.nn.functional.one_hot(choice, n_experts).double()  # [b e]
    soft = torch.randn(B, n_experts, generator=g, dtype=torch.float64).softmax(-1)
    return x, choice, one_hot, soft


def naive(pool, x, gates, **ctx):
    """The definition, one row and one expert at a time: y_i = Σ_e g_ie f_e(x_i)."""
    rows = []
    for i in range(x.shape[0]):
        row_ctx = {name: value[i:i + 1] for name, value in ctx.items()}
        rows.append(sum(gates[i, e] * expert.inner(x[i:i + 1], **row_ctx)[0]
                        for e, expert in enumerate(pool.experts)))
    return torch.stack(rows)


N_EXPERTS = pytest.mark.parametrize("n_experts", [1, 2, 4])


# --- exercise 3.2: grouping rows per expert ---------------------------------------------------

@pytest.mark.ex3_2
@pytest.mark.exercise
@N_EXPERTS
def test_group_rows_lists_rows_with_nonzero_gates(n_experts):
    _, _, _, gates = data(n_experts)
    gates[1] = 0.0
    gates[2, 0] = 1e-300  # tiny but not zero: still runs, or soft routing would be inexact
    rows = group_rows(gates)
    assert len(rows) == n_experts
    for e in range(n_experts):
        expected = [i for i in range(B) if gates[i, e] != 0]
        assert rows[e].dtype == torch.long and rows[e].tolist() == expected


@pytest.mark.ex3_2
@pytest.mark.exercise
def test_group_rows_one_hot_partitions_the_batch():
    gates = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
    assert [r.tolist() for r in group_rows(gates)] == [[1], [0, 2, 3], []]
    assert [r.tolist() for r in group_rows(gates, run_all=True)] == [[0, 1, 2, 3]] * 3


# --- exercise 3.1: the weighted sum -----------------------------------------------------------

@pytest.mark.ex3_1
@pytest.mark.exercise
@N_EXPERTS
def test_combine_is_the_weighted_sum(n_experts):
    x, _, _, gates = data(n_experts)
    gates[:, 0] = torch.tensor([0.0, 0.5, 0.0, 0.25, 0.0])  # expert 0 ran on rows 1 and 3 only
    full = [torch.randn(B, T, D, dtype=torch.float64) for _ in range(n_experts)]  # f_e(x) [b t d]
    rows = [torch.tensor([i for i in range(B) if gates[i, e] != 0]) for e in range(n_experts)]
    outs = [f[r] for f, r in zip(full, rows)]
    expected = torch.stack([sum(gates[i, e] * full[e][i] for e in range(n_experts)) for i in range(B)])
    torch.testing.assert_close(combine(outs, rows, gates), expected, **TOL)


@pytest.mark.ex3_1
@pytest.mark.exercise
def test_combine_skipped_experts_and_exact_one_hot():
    out = torch.randn(2, T, D, dtype=torch.float64)
    gates = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    y = combine([None, out], [torch.tensor([], dtype=torch.long), torch.tensor([0, 1])], gates)
    assert torch.equal(y[:2], out)  # gate 1.0: bit-exact, so extract() can match the pool
    assert torch.equal(y[2], torch.zeros(T, D, dtype=torch.float64))  # no expert: 0


# --- ctx slicing and dispatch (no exercise needed) --------------------------------------------

def test_slice_rows_slices_only_per_example_tensors():
    ctx = dict(src_pad=torch.ones(B, 6, dtype=torch.bool), memory=torch.randn(B, 6, D),
               shared=torch.randn(7), flag=3, nothing=None)
    sliced = slice_rows(ctx, torch.tensor([1, 3]), B)
    assert sliced["src_pad"].shape == (2, 6) and torch.equal(sliced["memory"], ctx["memory"][[1, 3]])
    assert sliced["shared"] is ctx["shared"] and sliced["flag"] == 3 and sliced["nothing"] is None
    assert slice_rows(ctx, torch.arange(B), B)["memory"] is ctx["memory"]  # all rows: no copy


def test_dispatch_runs_each_expert_on_its_rows_once():
    pool = toy_pool(3)
    x = torch.randn(B, T, D, dtype=torch.float64)
    rows = [torch.tensor([0, 4]), torch.tensor([], dtype=torch.long), torch.tensor([1, 2, 3])]
    outs = dispatch(x, rows, list(pool.experts), {})
    assert outs[1] is None and [e.calls for e in pool.experts] == [[2], [], [3]]
    torch.testing.assert_close(outs[2], pool.experts[2].inner(x[1:4]), **TOL)


# --- the pool -----------------------------------------------------------------------------------

@pytest.mark.exercise
@N_EXPERTS
def test_hard_pool_equals_the_chosen_expert_at_one_dense_cost(n_experts):
    pool = toy_pool(n_experts)
    x, choice, one_hot, _ = data(n_experts)
    y = pool(x, one_hot)
    for i in range(B):
        torch.testing.assert_close(y[i], pool.experts[int(choice[i])].inner(x[i:i + 1])[0], **TOL)
    for e, expert in enumerate(pool.experts):
        n_rows = int((choice == e).sum())
        assert expert.calls == ([n_rows] if n_rows else [])  # once, on its rows; never if unchosen


@pytest.mark.exercise
@N_EXPERTS
def test_soft_pool_equals_naive_loop_and_skips_zero_gates(n_experts):
    pool = toy_pool(n_experts)
    x, _, _, gates = data(n_experts)
    if n_experts > 1:
        gates[:, -1] = 0.0  # nobody wants the last expert
        gates[0, 1:] = 0.0  # row 0 wants expert 0 only
        gates = gates / gates.sum(-1, keepdim=True)
    torch.testing.assert_close(pool(x, gates), naive(pool, x, gates), **TOL)
    calls = [e.calls for e in pool.experts]
    if n_experts > 1:
        assert calls[-1] == [] and calls[0] == [B]  # an all-zero gate column costs nothing
    if n_experts > 2:
        assert calls[1] == [B - 1]  # row 0 skipped expert 1


@pytest.mark.exercise
@N_EXPERTS
def test_run_all_gives_the_same_forward_value(n_experts):
    x, _, one_hot, soft = data(n_experts)
    for gates in (one_hot, soft):
        pool = toy_pool(n_experts)
        torch.testing.assert_close(pool(x, gates, run_all=True), pool(x, gates), **TOL)
        assert all(e.calls[0] == B for e in pool.experts)  # run_all: every expert, every row


@pytest.mark.exercise
@N_EXPERTS
@pytest.mark.parametrize("run_all", [True, False])
def test_gate_gradient_is_the_analytic_formula(n_experts, run_all):
    pool = toy_pool(n_experts)
    x, choice, one_hot, _ = data(n_experts)
    gates = one_hot.clone().requires_grad_(True)  # like straight-through: one-hot forward
    w = torch.randn(B, T, D, dtype=torch.float64)
    (pool(x, gates, run_all=run_all) * w).sum().backward()
    with torch.no_grad():  # d(Σ y·w)/d g_ie = ⟨w_i, f_e(x_i)⟩
        formula = torch.stack([(w * e.inner(x)).sum((1, 2)) for e in pool.experts], dim=1)  # [b e]
    expected = formula if run_all else formula * one_hot  # unchosen experts never ran: 0
    torch.testing.assert_close(gates.grad, expected, **TOL)
    assert (gates.grad[torch.arange(B), choice] != 0).all()


@pytest.mark.exercise
@pytest.mark.parametrize("kind", [EncoderLayer, DecoderLayer])
def test_layer_experts_slice_their_ctx(kind):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=D, n_heads=2, d_ff=16, fused_attention="off")
    pool = ExpertPool([Counting(kind(cfg)) for _ in range(3)]).double().eval()
    x, _, _, soft = data(3)
    g = torch.Generator().manual_seed(2)
    memory = torch.randn(B, 4, D, generator=g, dtype=torch.float64)
    src_pad = torch.arange(4)[None, :] < torch.tensor([4, 1, 3, 2, 4])[:, None]  # [b s]
    if kind is EncoderLayer:  # the encoder's input is the source itself
        x, memory = memory, None
    for gates in (torch.eye(3, dtype=torch.float64)[[0, 2, 2, 0, 1]], soft):
        ctx = dict(src_pad=src_pad) if memory is None else dict(memory=memory, src_pad=src_pad)
        torch.testing.assert_close(pool(x, gates, **ctx), naive(pool, x, gates, **ctx), **TOL)


@pytest.mark.exercise
def test_all_zero_gates_give_zeros_and_call_nobody():
    pool = toy_pool(2)
    x = torch.randn(B, T, D, dtype=torch.float64)
    assert torch.equal(pool(x, torch.zeros(B, 2, dtype=torch.float64)), torch.zeros_like(x))
    assert all(e.calls == [] for e in pool.experts)


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
    pool = ExpertPool([kind(ModelConfig(d_model=D, n_heads=2, d_ff=16, fused_attention="off"))
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
    import minimoe.experts as experts

    used = []
    monkeypatch.setattr(experts, "dispatch_sorted", lambda *a: used.append("sorted") or dispatch_sorted(*a))
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
    pool = ExpertPool([make_expert(kind) for _ in range(3)])
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
    pool = ExpertPool([EncoderLayer(cfg) for _ in range(3)])
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
    import minimoe.experts as experts

    pool = toy_pool(3).float()
    x = torch.randn(B, T, D)
    assert pool.choose_path(x) == "sorted"  # CPU's _grouped_mm is a loop: no gain (grouped.py)
    pool.path = "fastest"
    with pytest.raises(ConfigError, match="auto, sorted, grouped or general"):
        pool.choose_path(x)
    pool.path = "grouped"  # Toy experts sit inside Counting wrappers: groupable Linear only
    monkeypatch.setattr(experts, "grouped_mm_works", lambda *a: False)
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

    pool = ExpertPool([Scaled() for _ in range(2)])
    assert pool.twin() is None
    no_shift = ExpertPool([nn.Sequential(nn.LayerNorm(D, bias=False)) for _ in range(2)])
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
    pool = ExpertPool([kind(ModelConfig(d_model=64, n_heads=4, d_ff=256, dropout=0.0))
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


# --- upcycling -----------------------------------------------------------------------------------

@pytest.mark.exercise
@pytest.mark.parametrize("kind", [EncoderLayer, DecoderLayer])
def test_upcycle_without_noise_reproduces_the_dense_layer(kind):
    torch.manual_seed(0)
    layer = kind(ModelConfig(d_model=D, n_heads=2, d_ff=16)).double().eval()
    pool = ExpertPool.upcycle(layer, 3, noise_std=0.0)
    x, _, _, gates = data(3)  # soft gates: every expert runs, weights sum to 1
    ctx = dict(memory=torch.randn(B, 4, D, dtype=torch.float64)) if kind is DecoderLayer else {}
    dense = layer(x, **ctx)
    torch.testing.assert_close(pool(x, gates, **ctx), dense, atol=1e-12, rtol=1e-12)
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(pool.parameters(), layer.parameters()))


def test_upcycle_noise_makes_experts_differ_and_is_seeded():
    layer = Toy().double()
    original = {k: v.clone() for k, v in layer.state_dict().items()}
    make = lambda: ExpertPool.upcycle(layer, 2, 0.1, generator=torch.Generator().manual_seed(7))
    pool, again = make(), make()
    first, second = (dict(e.named_parameters()) for e in pool.experts)
    assert all(not torch.equal(first[name], second[name]) for name in first)
    assert all((first[name] - original[name]).std() < 0.3 for name in first)  # small noise
    assert all(torch.equal(p, q) for p, q in zip(pool.parameters(), again.parameters()))
    assert all(torch.equal(v, original[k]) for k, v in layer.state_dict().items())  # untouched


def test_pool_rejects_bad_input():
    with pytest.raises(ConfigError):
        ExpertPool([])
    with pytest.raises(ConfigError):
        ExpertPool.upcycle(Toy(), 2, noise_std=-1.0)
    with pytest.raises(ValueError, match="gates"):
        toy_pool(2)(torch.randn(B, T, D, dtype=torch.float64), torch.ones(B, 3, dtype=torch.float64))


@pytest.mark.cuda
@pytest.mark.exercise
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", [EncoderLayer, DecoderLayer])
def test_cuda_pool_matches_cpu_for_hard_and_soft_gates(kind):
    """The same pool on CUDA (fp32, SDPA) and on CPU: outputs and input gradients agree."""
    torch.manual_seed(0)
    pool = ExpertPool([kind(ModelConfig(d_model=D, n_heads=2, d_ff=16)) for _ in range(3)])
    x, _, _, soft = data(3)
    x, soft = x.float(), soft.float()
    ctx = dict(memory=torch.randn(B, 4, D)) if kind is DecoderLayer else {}
    for gates in (torch.eye(3)[[0, 2, 2, 0, 1]], soft):
        outs = []
        for dev in ("cpu", "cuda"):
            pool.to(dev)
            xs = x.detach().to(dev).requires_grad_()
            y = pool(xs, gates.to(dev), **{k: v.to(dev) for k, v in ctx.items()})
            y.square().sum().backward()
            outs.append((y.detach().cpu(), xs.grad.cpu()))
        torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(outs[1][1], outs[0][1], atol=1e-4, rtol=1e-4)

