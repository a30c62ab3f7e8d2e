"""Tests for minimoe/router.py: temperature schedule, selection functions, baselines, TaskRouter.

What is checked: τ(t) against hand-computed values; softmax gates against the formula; Gumbel
samples (sum to 1, seeded, argmax frequencies = softmax — the Gumbel-max trick); the
straight-through gates (forward exactly one-hot, gradient = the soft sample's gradient);
deterministic evaluation routes; the average and random task-level baselines over the edge
sizes; TaskRouter against a per-layer loop of nn.Linear in float64; mean_pool against a loop.

Run: `python -m pytest tests/test_router.py -q` (a few seconds, mostly importing torch). Exercise tests carry
`exercise` and `ex4_1` (straight-through Gumbel), `ex4_2` (τ schedule), `ex4_3` (mean pool).
"""

import math

import pytest
import torch
from torch import nn

from minimoe.errors import ConfigError
from minimoe.router import (
    TaskRouter, average_routes, gumbel_softmax_routes, hard_routes, mean_pool, random_task_routes,
    select_routes, softmax_routes, st_gumbel_routes, stage_taus, tau_schedule,
)

PAPER_TAU = dict(tau0=2.0, tau_min=0.1, decay=3e-4)  # the paper's values (lessons/paper_facts.md, "Router")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_logits(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=seeded(seed), dtype=torch.float64) * scale


# --- τ schedule ---------------------------------------------------------------------------

@pytest.mark.ex4_2
@pytest.mark.exercise
def test_tau_schedule_hand_computed_values():
    assert tau_schedule(0, **PAPER_TAU) == 2.0  # exp(0) = 1: starts at τ0
    assert tau_schedule(1000, **PAPER_TAU) == pytest.approx(1.4816364413634358, rel=1e-12)  # 2·e^−0.3
    # 2·exp(−3e-4·t) = 0.1  ⇔  t = ln(20) / 3e-4 = 9985.77…: the floor takes over between these steps.
    assert tau_schedule(9985, **PAPER_TAU) == pytest.approx(0.1000232, rel=1e-6)  # 0.1·e^(3e-4·0.774)
    assert tau_schedule(9986, **PAPER_TAU) == 0.1
    assert tau_schedule(10**6, **PAPER_TAU) == 0.1


@pytest.mark.ex4_2
@pytest.mark.exercise
def test_tau_schedule_monotone_and_other_settings():
    taus = [tau_schedule(step, **PAPER_TAU) for step in range(0, 15000, 250)]
    assert all(a >= b for a, b in zip(taus, taus[1:]))
    assert all(a > b for a, b in zip(taus[:40], taus[1:40]))  # strictly decreasing before the floor
    assert tau_schedule(500, tau0=1.5, tau_min=0.1, decay=0.0) == 1.5  # no decay: constant
    # Stage 2 of two-stage training anneals 300 → 1: halfway (in log space) is sqrt(300).
    half = math.log(300) / 2 / 1e-3
    assert tau_schedule(half, tau0=300.0, tau_min=1.0, decay=1e-3) == pytest.approx(math.sqrt(300))


@pytest.mark.exercise
def test_stage_taus_is_the_schedule_of_a_stage():
    paper = stage_taus(2.0, 0.1, 600, decay=3e-4)  # an explicit rate is used as is
    assert [paper(s) for s in (0, 300, 599)] == [tau_schedule(s, **PAPER_TAU) for s in (0, 300, 599)]
    auto = stage_taus(2.0, 0.1, 600)  # decay < 0: τ_min reached at 70 % of the steps, then held
    assert auto(0) == 2.0 and auto(419) > 0.1 and auto(420) == pytest.approx(0.1) and auto(599) == 0.1
    stage2 = stage_taus(300.0, 1.0, 9, reach=1.0)  # stage 2: exactly τ_end at its last step
    assert stage2(0) == 300.0 and stage2(9) == pytest.approx(1.0)


# --- softmax, Gumbel, hard ------------------------------------------------------------------

def test_softmax_routes_match_formula_and_sum_to_one():
    logits = random_logits(5, 3, 4)
    for tau in (0.5, 1.0, 7.0):
        gates = softmax_routes(logits, tau)
        expected = torch.exp(logits / tau) / torch.exp(logits / tau).sum(-1, keepdim=True)
        torch.testing.assert_close(gates, expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(gates.sum(-1), torch.ones(5, 3, dtype=torch.float64))


def test_small_tau_approaches_one_hot_and_large_tau_uniform():
    logits = random_logits(6, 4)
    torch.testing.assert_close(softmax_routes(logits, 1e-3), hard_routes(logits), rtol=0, atol=1e-9)
    torch.testing.assert_close(softmax_routes(logits, 1e6), torch.full_like(logits, 0.25), rtol=0, atol=1e-5)


def test_hard_routes_one_hot_first_of_ties():
    logits = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.5, 0.2]])
    assert torch.equal(hard_routes(logits), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_gumbel_routes_sum_to_one_and_are_seeded():
    logits = random_logits(4, 3, 5)
    gates = gumbel_softmax_routes(logits, 0.7, seeded(1))
    torch.testing.assert_close(gates.sum(-1), torch.ones(4, 3, dtype=torch.float64))
    assert (gates >= 0).all()
    assert torch.equal(gates, gumbel_softmax_routes(logits, 0.7, seeded(1)))
    assert not torch.equal(gates, gumbel_softmax_routes(logits, 0.7, seeded(2)))
    assert not torch.allclose(gates, softmax_routes(logits, 0.7))  # the noise is really there


def test_gumbel_argmax_frequencies_follow_softmax():
    # Gumbel-max trick: argmax(logits + g) ~ Categorical(softmax(logits)). 40k draws → std err ≈ 0.0025.
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5], dtype=torch.float64)
    draws = gumbel_softmax_routes(logits.expand(40_000, 4), 1.0, seeded(3))
    freq = hard_routes(draws).mean(0)
    torch.testing.assert_close(freq, torch.softmax(logits, -1), rtol=0, atol=0.015)


# --- straight-through Gumbel (exercise 4.1) -------------------------------------------------

@pytest.mark.ex4_1
@pytest.mark.exercise
def test_st_gumbel_forward_is_exactly_the_soft_samples_one_hot():
    logits = random_logits(6, 3, 4)
    gates = st_gumbel_routes(logits, 0.5, seeded(4))
    assert set(gates.unique().tolist()) <= {0.0, 1.0}  # exactly 0/1, no 1 - 1e-17
    assert torch.equal(gates.sum(-1), torch.ones(6, 3, dtype=torch.float64))
    soft = gumbel_softmax_routes(logits, 0.5, seeded(4))  # the same noise
    assert torch.equal(gates, hard_routes(soft))


@pytest.mark.ex4_1
@pytest.mark.exercise
def test_st_gumbel_gradient_is_the_soft_samples_gradient():
    weights = random_logits(5, 4, seed=9)  # an arbitrary loss Σ gates·weights
    logits_st = random_logits(5, 4).requires_grad_()
    (st_gumbel_routes(logits_st, 0.8, seeded(5)) * weights).sum().backward()
    logits_soft = random_logits(5, 4).requires_grad_()
    (gumbel_softmax_routes(logits_soft, 0.8, seeded(5)) * weights).sum().backward()
    torch.testing.assert_close(logits_st.grad, logits_soft.grad, rtol=0, atol=0)
    assert logits_st.grad.abs().sum() > 0


@pytest.mark.ex4_1
@pytest.mark.exercise
def test_select_routes_training_st_gumbel():
    logits = random_logits(3, 2, 4)
    gates = select_routes(logits, "st_gumbel", 1.3, training=True, generator=seeded(6))
    assert torch.equal(gates, st_gumbel_routes(logits, 1.3, seeded(6)))


# --- select_routes --------------------------------------------------------------------------

def test_select_routes_training_soft_modes():
    logits = random_logits(3, 2, 4)
    assert torch.equal(select_routes(logits, "softmax", 1.3, training=True), softmax_routes(logits, 1.3))
    gates = select_routes(logits, "gumbel", 1.3, training=True, generator=seeded(6))
    assert torch.equal(gates, gumbel_softmax_routes(logits, 1.3, seeded(6)))


@pytest.mark.parametrize("selection", ["gumbel", "st_gumbel"])
def test_select_routes_eval_is_deterministic_argmax(selection):
    logits = random_logits(5, 3, 4)
    first = select_routes(logits, selection, 0.5, training=False)
    assert torch.equal(first, hard_routes(logits))
    assert torch.equal(first, select_routes(logits, selection, 0.5, training=False, generator=seeded(7)))


def test_select_routes_eval_softmax_and_unknown_selection():
    logits = random_logits(2, 3)
    assert torch.equal(select_routes(logits, "softmax", 4.0, training=False), softmax_routes(logits, 4.0))
    with pytest.raises(ConfigError, match="selection='argmax'"):
        select_routes(logits, "argmax", 1.0, training=True)


# --- baselines ----------------------------------------------------------------------------

@pytest.mark.parametrize("n_experts", [1, 2, 4])
def test_average_routes_uniform(n_experts):
    routes = average_routes(3, 2, n_experts)
    assert routes.shape == (3, 2, n_experts)
    assert torch.equal(routes, torch.full((3, 2, n_experts), 1.0 / n_experts))


VALID = [(e, k) for e in (1, 2, 4) for k in (1, 2, 3) if k <= e]
INVALID = [(e, k) for e in (1, 2, 4) for k in (0, 1, 2, 3) if not 1 <= k <= e]


@pytest.mark.parametrize("n_tasks", [1, 7])  # fewer and more tasks than experts (for e ≥ 2)
@pytest.mark.parametrize(("n_experts", "top_k"), VALID)
def test_random_task_routes_table(n_tasks, n_experts, top_k):
    table = random_task_routes(n_tasks, 3, n_experts, top_k, seed=0)
    assert table.shape == (n_tasks, 3, n_experts)
    assert ((table != 0).sum(-1) == top_k).all()  # exactly top_k experts per task and layer
    assert (table[table != 0] == torch.tensor(1.0 / top_k)).all()
    assert torch.equal(table, random_task_routes(n_tasks, 3, n_experts, top_k, seed=0))
    # Fixed per task: task i's route does not move when more tasks join the table.
    assert torch.equal(table, random_task_routes(n_tasks + 5, 3, n_experts, top_k, seed=0)[:n_tasks])
    if math.comb(n_experts, top_k) > 1:  # otherwise every table is the same uniform table
        tables = {tuple(random_task_routes(n_tasks, 3, n_experts, top_k, seed=s).flatten().tolist())
                  for s in range(5)}
        assert len(tables) > 1


@pytest.mark.parametrize(("n_experts", "top_k"), INVALID)
def test_random_task_routes_rejects_bad_top_k(n_experts, top_k):
    with pytest.raises(ConfigError, match="random_top_k"):
        random_task_routes(2, 3, n_experts, top_k, seed=0)


def test_random_task_routes_seeds_differ_and_cover_experts():
    table = random_task_routes(200, 4, 4, 1, seed=0)
    assert not torch.equal(table, random_task_routes(200, 4, 4, 1, seed=1))
    usage = table.mean((0, 1))  # each expert is picked ~1/4 of the time: the choice is uniform
    torch.testing.assert_close(usage, torch.full((4,), 0.25), rtol=0, atol=0.05)


# --- TaskRouter ---------------------------------------------------------------------------

def naive_router(router: TaskRouter, task_vecs: torch.Tensor) -> torch.Tensor:
    """Oracle: one nn.Linear → GELU → nn.Linear per layer position, run in a loop."""
    per_layer = []
    for layer in range(router.w_in.shape[0]):
        first = nn.Linear(*router.w_in.shape[1:]).double()
        second = nn.Linear(*router.w_out.shape[1:]).double()
        with torch.no_grad():  # nn.Linear stores weight as [out in]
            first.weight.copy_(router.w_in[layer].T)
            first.bias.copy_(router.b_in[layer])
            second.weight.copy_(router.w_out[layer].T)
            second.bias.copy_(router.b_out[layer])
        per_layer.append(second(nn.functional.gelu(first(task_vecs))))
    return torch.stack(per_layer, dim=1)  # [n l e]


def random_router(n_experts: int, seed: int = 0) -> TaskRouter:
    torch.manual_seed(seed)
    router = TaskRouter(d_in=8, n_layers=3, n_experts=n_experts, d_hidden=16).double()
    with torch.no_grad():  # unit-scale weights everywhere, so the check is not dominated by tiny logits
        for param in router.parameters():
            param.normal_()
    return router


@pytest.mark.parametrize("n_experts", [1, 2, 4])
def test_task_router_equals_per_layer_loop(n_experts):
    router, task_vecs = random_router(n_experts), random_logits(5, 8, seed=1)
    logits = router(task_vecs)
    assert logits.shape == (5, 3, n_experts)
    torch.testing.assert_close(logits, naive_router(router, task_vecs), rtol=1e-12, atol=1e-12)


def test_task_router_layers_are_independent():
    router, task_vecs = random_router(3), random_logits(4, 8, seed=1)
    before = router(task_vecs).detach()
    with torch.no_grad():
        router.w_in[1].add_(1.0)  # perturb layer position 1 only
        router.b_out[1].add_(1.0)
    after = router(task_vecs).detach()
    assert torch.equal(after[:, [0, 2]], before[:, [0, 2]])
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_task_router_initial_routes_near_uniform():
    torch.manual_seed(0)
    router = TaskRouter(d_in=32, n_layers=4, n_experts=3)
    gates = softmax_routes(router(torch.randn(50, 32)), 1.0)  # unit-scale task vectors
    assert (gates * 3 - 1).abs().max() < 0.2  # every gate within 20 % of 1/3
    assert (gates * 3 - 1).abs().mean() < 0.03


def assert_all_params_get_gradient(router: TaskRouter, gates: torch.Tensor) -> None:
    (gates * random_logits(*gates.shape, seed=3).float()).sum().backward()
    for name, param in router.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_gradients_reach_router_through_softmax():
    torch.manual_seed(0)
    router = TaskRouter(d_in=8, n_layers=2, n_experts=3, d_hidden=16)
    assert_all_params_get_gradient(router, softmax_routes(router(torch.randn(4, 8)), 1.0))


@pytest.mark.ex4_1
@pytest.mark.exercise
def test_gradients_reach_router_through_st_gumbel():
    torch.manual_seed(0)
    router = TaskRouter(d_in=8, n_layers=2, n_experts=3, d_hidden=16)
    gates = st_gumbel_routes(router(torch.randn(4, 8)), 1.0, seeded(8))
    assert_all_params_get_gradient(router, gates)


# --- mean_pool (exercise 4.3) ---------------------------------------------------------------

@pytest.mark.ex4_3
@pytest.mark.exercise
def test_mean_pool_equals_loop_and_ignores_padding():
    states = random_logits(4, 6, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1],
                         [1, 0, 1, 0, 0, 0],
                         [0, 0, 0, 0, 0, 1],
                         [0, 0, 0, 0, 0, 0]]).bool()  # full, gappy, last-only, all padding
    expected = torch.zeros(4, 5, dtype=torch.float64)
    for row in range(4):
        real = [states[row, pos] for pos in range(6) if mask[row, pos]]
        if real:
            expected[row] = sum(real) / len(real)
    torch.testing.assert_close(mean_pool(states, mask), expected, rtol=1e-12, atol=1e-14)
    # Whatever sits at padded positions (even NaN) must not change the result.
    nan_padded = states.masked_fill(~mask[..., None], float("nan"))
    torch.testing.assert_close(mean_pool(nan_padded, mask), expected, rtol=1e-12, atol=1e-14)
    assert torch.equal(mean_pool(states, mask)[3], torch.zeros(5, dtype=torch.float64))
