"""Tests of minimoe/token_router.py: token-level top-k routing, its losses, and the model using it.

Oracles (float64, tight tolerances): `TokenMoEFFN` equals a naive loop over tokens that sorts
each token's router probabilities and sums its k experts' FFN outputs (k ∈ {1, 2}, and k = 3 of
4 experts); the load-balancing loss and the z-loss equal hand computations, and the balancing
loss is exactly 1 for perfectly uniform routing. Properties: gates have k nonzeros and sum to
1; gradients reach the router (also through the task loss alone, even with k = 1) and every
used expert; no token is ever dropped; upcycled copies with no noise equal the dense FFN; a
token-routed TaskMoETransformer runs without task ids, is causal, and reports an aux loss.

Exercise 9.1 (`top_k_gates`) tests carry `ex9_1`; tests that run TokenMoEFFN also need the
expert-pool exercises and carry only the umbrella `exercise` marker.
Run: `python -m pytest tests/test_token_router.py -q`.
"""

import copy
import dataclasses
import math

import pytest
import torch

from minimoe.config import ModelConfig
from minimoe.errors import ConfigError
from minimoe.layers import FeedForwardBlock
from minimoe.model import TaskMoETransformer
from minimoe.presets import PRESETS, apply_overrides
from minimoe.token_router import (TokenMoEFFN, load_balancing_loss, router_z_loss, top_k_gates)
from minimoe.train import param_groups
from minimoe.upcycle import build_model

TOL = dict(atol=1e-12, rtol=0)
CFG = ModelConfig(d_model=8, n_heads=2, d_ff=16)
EDGES = [(2, 1), (2, 2), (4, 1), (4, 2), (4, 3)]  # (n_experts, k): k ∈ {1, 2}, and 3 of 4


def logits_of(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def block(n_experts, k, seed=0):
    torch.manual_seed(seed)
    return TokenMoEFFN(CFG, n_experts, k).double()


def naive(moe: TokenMoEFFN, x):
    """Per token: LayerNorm, router softmax, the k most probable experts, gates renormalised."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            h = moe.norm(x[i, j])
            probs = moe.router.gate.weight.mv(h).softmax(-1)
            chosen = sorted(range(len(probs)), key=lambda e: -probs[e].item())[:moe.k]
            total = sum(probs[e] for e in chosen)
            out[i, j] = x[i, j] + sum(probs[e] / total * moe.pool.experts[e](h) for e in chosen)
    return out


# --- exercise 9.1: top-k gates ----------------------------------------------------------------

@pytest.mark.ex9_1
@pytest.mark.exercise
@pytest.mark.parametrize("n_experts,k", EDGES)
def test_gates_have_k_nonzeros_that_sum_to_one_and_keep_the_top_probabilities(n_experts, k):
    logits = logits_of((3, 5, n_experts))
    gates, probs = top_k_gates(logits, k)
    torch.testing.assert_close(probs, logits.softmax(-1), **TOL)
    assert ((gates != 0).sum(-1) == k).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(3, 5, dtype=torch.float64), **TOL)
    top = probs.topk(k, dim=-1)
    chosen = torch.gather(gates, -1, top.indices)  # the gates sit on the k most probable experts,
    torch.testing.assert_close(chosen, top.values / top.values.sum(-1, keepdim=True), **TOL)  # in ratio


@pytest.mark.ex9_1
@pytest.mark.exercise
@pytest.mark.parametrize("k", [1, 2])
def test_gate_gradient_is_that_of_the_raw_top_k_probabilities(k):
    """Straight-through: forward renormalised, backward as Switch's gate p_e (nonzero for k = 1)."""
    logits = logits_of((4, 3), seed=1).requires_grad_()
    weights = logits_of((4, 3), seed=2)
    gates, _ = top_k_gates(logits, k)
    (gates * weights).sum().backward()
    expected_logits = logits.detach().clone().requires_grad_()
    probs = expected_logits.softmax(-1)
    mask = torch.zeros_like(probs).scatter(-1, probs.topk(k, -1).indices, 1.0)
    (probs * mask * weights).sum().backward()
    torch.testing.assert_close(logits.grad, expected_logits.grad, **TOL)
    assert logits.grad.abs().sum() > 0


def test_top_k_larger_than_the_experts_is_a_config_error():
    with pytest.raises(ConfigError, match="between 1 and n_experts=4"):
        top_k_gates(logits_of((2, 4)), 5)
    with pytest.raises(ConfigError, match="token_top_k"):
        TokenMoEFFN(CFG, 2, 3)
    with pytest.raises(ConfigError):
        TokenMoEFFN(CFG, 4, 0)


# --- auxiliary losses (no exercise needed: gates are built by hand) -----------------------------

def test_load_balancing_loss_matches_a_hand_computation():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]],
                         dtype=torch.float64)
    gates = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], dtype=torch.float64)
    share = [2 / 4, 1 / 4, 1 / 4]  # f: token dispatches per expert
    mean_prob = [(0.7 + 0.6 + 0.2 + 0.1) / 4, (0.2 + 0.3 + 0.5 + 0.1) / 4, (0.1 + 0.1 + 0.3 + 0.8) / 4]
    expected = 3 * sum(f * p for f, p in zip(share, mean_prob))
    assert load_balancing_loss(probs, gates).item() == pytest.approx(expected, abs=1e-12)
    # k = 2: f counts both choices of every token (8 dispatches).
    gates2 = torch.tensor([[.6, .4, 0], [.6, .4, 0], [0, .6, .4], [0, .4, .6]], dtype=torch.float64)
    share2 = [2 / 8, 4 / 8, 2 / 8]
    expected2 = 3 * sum(f * p for f, p in zip(share2, mean_prob))
    assert load_balancing_loss(probs, gates2).item() == pytest.approx(expected2, abs=1e-12)


@pytest.mark.parametrize("n_experts,k", EDGES)
def test_load_balancing_loss_is_one_for_perfectly_uniform_routing(n_experts, k):
    tokens = 4 * n_experts
    probs = torch.full((2, tokens // 2, n_experts), 1 / n_experts, dtype=torch.float64)
    gates = torch.zeros_like(probs)
    flat = gates.view(tokens, n_experts)
    for i in range(tokens):  # token i goes to experts i, i+1, …, i+k-1 (mod e): equal loads
        for j in range(k):
            flat[i, (i + j) % n_experts] = 1 / k
    assert load_balancing_loss(probs, gates).item() == pytest.approx(1.0, abs=1e-12)
    # Everything on expert 0, with a confident router: the loss grows towards e.
    skewed = torch.zeros_like(probs)
    skewed[..., 0] = 1.0
    confident = torch.full_like(probs, 0.01 / (n_experts - 1))
    confident[..., 0] = 0.99
    assert load_balancing_loss(confident, skewed).item() == pytest.approx(n_experts * 0.99, abs=1e-12)


def test_router_z_loss_matches_a_hand_computation():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 4.0]], dtype=torch.float64)
    lse = [math.log(2.0), math.log(math.e + math.e ** 2), math.log(math.exp(-3) + math.exp(4))]
    assert router_z_loss(logits).item() == pytest.approx(sum(z * z for z in lse) / 3, abs=1e-12)
    assert router_z_loss(logits.to(torch.bfloat16)).dtype == torch.float32  # never in bf16


# --- TokenMoEFFN (needs the expert-pool exercises too) ------------------------------------------

@pytest.mark.exercise
@pytest.mark.parametrize("n_experts,k", EDGES)
def test_token_moe_equals_a_naive_loop_over_tokens(n_experts, k):
    moe = block(n_experts, k)
    x = logits_of((3, 4, CFG.d_model), seed=3)
    torch.testing.assert_close(moe(x), naive(moe, x), **TOL)
    assert moe.last_gates.shape == (3, 4, n_experts) and moe.balance_loss.item() > 0 and moe.z_loss.item() > 0


@pytest.mark.exercise
@pytest.mark.parametrize("k", [1, 2])
def test_no_token_is_dropped_when_the_router_sends_everything_to_one_expert(k):
    moe = block(4, k)
    with torch.no_grad():
        moe.router.gate.weight.zero_()
        moe.norm.bias.fill_(1.0)
        moe.router.gate.weight[0].fill_(50.0)  # every token's first choice: expert 0
    x = logits_of((2, 6, CFG.d_model), seed=4)
    torch.testing.assert_close(moe(x), naive(moe, x), **TOL)  # dropless: all 12 tokens served
    assert (moe.last_gates.argmax(-1) == 0).all()
    if k == 1:  # f = (1, 0, 0, 0): the balancing loss is e · P_0, close to its maximum e
        mean_p0 = moe.router(moe.norm(x)).softmax(-1)[..., 0].mean().item()
        assert moe.balance_loss.item() == pytest.approx(4 * mean_p0, abs=1e-12) and mean_p0 > 0.99


@pytest.mark.exercise
@pytest.mark.parametrize("n_experts,k", [(2, 1), (4, 2)])
def test_gradients_reach_the_router_and_every_used_expert(n_experts, k):
    moe = block(n_experts, k)
    x = logits_of((3, 8, CFG.d_model), seed=5)
    moe(x).square().sum().backward()  # the task loss alone (no aux): straight-through gates
    assert moe.router.gate.weight.grad.abs().sum() > 0
    used = set(torch.topk(moe.router(moe.norm(x)), k, -1).indices.flatten().tolist())
    for e, expert in enumerate(moe.pool.experts):
        grad = expert[0].weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == (e in used), e
    moe.zero_grad()
    moe(x)
    moe.take_aux_loss(1.0, 1.0).backward()  # the aux losses alone reach the router too
    assert moe.router.gate.weight.grad.abs().sum() > 0


@pytest.mark.exercise
@pytest.mark.parametrize("n_experts,k", EDGES)
def test_upcycled_copies_without_noise_equal_the_dense_ffn(n_experts, k):
    torch.manual_seed(0)
    dense = FeedForwardBlock(CFG).double()
    moe = block(n_experts, k, seed=1)
    moe.load_dense(dense, noise_std=0.0)
    x = logits_of((2, 5, CFG.d_model), seed=6)
    torch.testing.assert_close(moe(x), dense(x), atol=1e-12, rtol=1e-12)
    moe.load_dense(dense, noise_std=0.1, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(moe.pool.experts[0][0].weight, dense.ffn[0].weight)


# --- configuration ---------------------------------------------------------------------------------

def test_config_validates_token_routing_and_names_the_fix():
    tiny = PRESETS["tiny"]
    cfg = apply_overrides(tiny, {"router_kind": "token", "expert_kind": "ffn", "token_top_k": 2})
    assert cfg.router.router_kind == "token" and cfg.router.token_top_k == 2
    cases = [({"router_kind": "token"}, "--expert_kind=ffn"),
             ({"router_kind": "token", "expert_kind": "ffn", "n_experts": 1}, "--n_experts"),
             ({"router_kind": "token", "expert_kind": "ffn", "routed": "none"}, "--routed=all"),
             ({"router_kind": "token", "expert_kind": "ffn", "routing": "random"}, "--routing=learned"),
             ({"router_kind": "tokens"}, "Did you mean 'token'"),
             ({"token_top_k": 3}, "--token_top_k=1"),
             ({"aux_loss_weight": -1.0}, "must be >= 0")]
    for overrides, fix in cases:
        with pytest.raises(ConfigError, match=fix):
            apply_overrides(tiny, overrides)


# --- the whole model -------------------------------------------------------------------------------

V = 23


def token_model(k=1, n_experts=3):
    torch.manual_seed(0)
    cfg = apply_overrides(PRESETS["tiny"], {"router_kind": "token", "expert_kind": "ffn", "token_top_k": k,
                                            "n_experts": n_experts, "n_enc_layers": 2, "n_dec_layers": 2})
    return build_model(dataclasses.replace(cfg.model, vocab_size=V), cfg.router, 5).double()


def tokens(b=4, s=7, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (b, s), generator=g)
    src[0, -2:] = 0  # padding in one row
    return src, torch.randint(3, V, (b, t), generator=g)


@pytest.mark.exercise
@pytest.mark.parametrize("k", [1, 2])
def test_token_routed_model_trains_without_task_ids_and_reports_its_aux_loss(k):
    model = token_model(k)
    assert model.n_routed == 0 and model.routes(torch.tensor([0, 1])) is None
    src, tgt = tokens()
    logits = model(src, tgt)  # no task ids, no gates
    aux = model.aux_loss()
    assert aux.item() > 0 and model.aux_loss() == 0.0  # counted once, then forgotten
    (logits.square().mean() + aux).backward()
    routers = [p for n, p in model.named_parameters() if ".router." in n]
    assert len(routers) == 4 and all(p.grad.abs().sum() > 0 for p in routers)
    groups = {g["name"]: g["params"] for g in param_groups(model, 1e-3, 2e-3, 3e-3)}
    assert {id(p) for p in routers} == {id(p) for p in groups["router"]}
    copy.deepcopy(model)  # no autograd graph is left on the modules after aux_loss()


@pytest.mark.exercise
def test_token_routed_decoder_is_causal():
    model = token_model(k=2).eval()
    src, tgt = tokens()
    out = model(src, tgt)
    tgt2 = tgt.clone()
    tgt2[:, 3:] = (tgt2[:, 3:] + 1) % V
    out2 = model(src, tgt2)
    torch.testing.assert_close(out[:, :3], out2[:, :3], rtol=0, atol=1e-12)
    assert not torch.allclose(out[:, 3:], out2[:, 3:])


@pytest.mark.exercise
def test_upcycling_a_dense_model_into_token_experts_keeps_its_function():
    from minimoe.upcycle import extract, upcycle

    torch.manual_seed(0)
    moe = token_model()
    dense_cfg = dataclasses.replace(moe.cfg, n_experts=1)
    dense_rcfg = dataclasses.replace(moe.rcfg, routing="dense", router_kind="task")
    dense = TaskMoETransformer(dense_cfg, dense_rcfg, 1).double()
    moe = upcycle(dense, moe.cfg, moe.rcfg, n_tasks=5, noise_std=0.0).double()
    src, tgt = tokens()
    torch.testing.assert_close(moe(src, tgt), dense(src, tgt), atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="per token"):
        extract(moe, task_id=0)


@pytest.mark.exercise
def test_token_ffn_step_ratio_reports_both_timings():
    from minimoe.bench_models import token_ffn_step_ratio

    r = token_ffn_step_ratio(d_model=8, d_ff=16, n_experts=2, tokens=32, rounds=1, inner=1)
    assert r["dense_ms"] > 0 and r["token_ms"] > 0 and r["token_over_dense"] > 0
    assert (r["moe_package_ms"] is None) == (r["moe_package_over_dense"] is None)
