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


import pytest
import torch
from torch import nn

from minimoe.config import ModelConfig
from minimoe.errors import ConfigError
from minimoe.experts import ExpertPool, combine, dispatch, group_rows, slice_rows
from minimoe.layers import DecoderLayer, EncoderLayer

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

