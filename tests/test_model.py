"""Tests for minimoe/model.py and minimoe/upcycle.py: the routed encoder–decoder as a whole.

Properties: causality of the decoder, batch-permutation equivariance for mixed-task batches,
upcycling with zero noise reproduces the dense model under any routes, `extract(task)` equals
the routed model in eval mode, gradients reach the router, generation stops at EOS.
Run: python -m pytest tests/test_model.py -q
"""

import dataclasses

import pytest
import torch

from minimoe.config import ModelConfig, RouterConfig
from minimoe.model import TaskMoETransformer
from minimoe.presets import PRESETS
from minimoe.upcycle import extract, upcycle

# These tests run the whole model, whose core functions are classroom exercises (masks,
# dispatch, straight-through routes): in a student copy they wait until the exercises are done.
pytestmark = pytest.mark.exercise

V, N_TASKS = 23, 5


def make(n_experts=3, routing="learned", selection="st_gumbel", expert_kind="layer",
         task_repr="learned", routed="all", st_mode="selected", seed=0) -> TaskMoETransformer:
    torch.manual_seed(seed)
    base = PRESETS["tiny"]
    cfg = dataclasses.replace(base.model, vocab_size=V, n_experts=n_experts, expert_kind=expert_kind,
                              routed=routed, n_enc_layers=2, n_dec_layers=2)
    rcfg = dataclasses.replace(base.router, routing=routing, selection=selection,
                               task_repr=task_repr, st_mode=st_mode)
    return TaskMoETransformer(cfg, rcfg, N_TASKS).double()


def batch(b=6, s=7, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (b, s), generator=g)
    src[0, -2:] = 0  # padding in one row
    tgt = torch.randint(3, V, (b, t), generator=g)
    tasks = torch.randint(0, N_TASKS, (b,), generator=g)
    return src, tgt, tasks


@pytest.mark.parametrize("expert_kind", ["layer", "ffn"])
def test_future_decoder_tokens_never_change_earlier_logits(expert_kind):
    model = make(expert_kind=expert_kind).eval()
    src, tgt, tasks = batch()
    out = model(src, tgt, tasks)
    tgt2 = tgt.clone()
    tgt2[:, 3:] = (tgt2[:, 3:] + 1) % V
    out2 = model(src, tgt2, tasks)
    torch.testing.assert_close(out[:, :3], out2[:, :3], rtol=0, atol=1e-12)
    assert not torch.allclose(out[:, 3:], out2[:, 3:])


@pytest.mark.parametrize("selection", ["softmax", "st_gumbel"])
@pytest.mark.parametrize("n_experts", [1, 2, 4])
def test_permuting_a_mixed_task_batch_permutes_outputs(selection, n_experts):
    model = make(n_experts=n_experts, selection=selection).eval()
    src, tgt, tasks = batch()
    perm = torch.randperm(src.shape[0], generator=torch.Generator().manual_seed(3))
    out = model(src, tgt, tasks)
    out_perm = model(src[perm], tgt[perm], tasks[perm])
    torch.testing.assert_close(out_perm, out[perm], rtol=0, atol=1e-12)


@pytest.mark.parametrize("expert_kind", ["layer", "ffn"])
@pytest.mark.parametrize("selection", ["softmax", "st_gumbel"])
def test_upcycled_moe_with_zero_noise_equals_dense_under_any_route(expert_kind, selection):
    dense = make(n_experts=1, routing="dense")
    moe = upcycle(dense, dataclasses.replace(dense.cfg, n_experts=3, expert_kind=expert_kind),
                  dataclasses.replace(dense.rcfg, routing="learned", selection=selection),
                  N_TASKS, noise_std=0.0).double()
    dense.eval(), moe.eval()
    src, tgt, tasks = batch()
    expected = dense(src, tgt)
    for seed in range(3):  # arbitrary gates that sum to 1, per example and position
        g = torch.rand(src.shape[0], moe.n_routed, 3, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)
        gates = g / g.sum(-1, keepdim=True)
        torch.testing.assert_close(moe(src, tgt, gates=gates), expected, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(moe(src, tgt, tasks), expected, rtol=1e-9, atol=1e-10)


def test_upcycle_noise_makes_experts_differ_and_shape_mismatch_is_named():
    dense = make(n_experts=1, routing="dense")
    moe = upcycle(dense, dataclasses.replace(dense.cfg, n_experts=2), dense.rcfg.__class__(),
                  N_TASKS, noise_std=1e-3)
    p0, p1 = (list(e.parameters())[0] for e in moe.encoder[0].pool.experts)
    assert not torch.equal(p0, p1)
    with pytest.raises(ValueError, match="d_ff"):
        upcycle(dense, dataclasses.replace(dense.cfg, n_experts=2, d_ff=16), RouterConfig(), N_TASKS)


@pytest.mark.parametrize("expert_kind", ["layer", "ffn"])
@pytest.mark.parametrize("routed", ["all", "encoder", "decoder"])
def test_extract_equals_routed_model_in_eval_mode(expert_kind, routed):
    model = make(expert_kind=expert_kind, routed=routed).eval()
    src, tgt, _ = batch()
    for task in range(N_TASKS):
        tasks = torch.full((src.shape[0],), task)
        dense = extract(model, task).double().eval()
        assert dense.n_routed == 0
        torch.testing.assert_close(dense(src, tgt), model(src, tgt, tasks), rtol=0, atol=1e-12)
        assert torch.equal(dense.generate(src, max_new=4), model.generate(src, tasks, max_new=4))


def test_extract_with_explicit_gates():
    model = make().eval()
    gates = torch.zeros(model.n_routed, 3, dtype=torch.float64)
    gates[:, 1] = 1.0
    src, tgt, _ = batch()
    dense = extract(model, gates=gates).double()
    torch.testing.assert_close(dense(src, tgt), model(src, tgt, gates=gates.expand(src.shape[0], -1, -1)),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("selection,st_mode", [("softmax", "selected"), ("gumbel", "selected"),
                                               ("st_gumbel", "selected"), ("st_gumbel", "full")])
@pytest.mark.parametrize("task_repr", ["learned", "instruction"])
def test_gradients_reach_the_router(selection, st_mode, task_repr):
    model = make(selection=selection, st_mode=st_mode, task_repr=task_repr).train()
    if task_repr == "instruction":
        model.set_task_vectors(torch.randn(N_TASKS, model.cfg.d_model, dtype=torch.float64))
    src, tgt, tasks = batch()
    model(src, tgt, tasks, generator=torch.Generator().manual_seed(0)).square().mean().backward()
    grads = [p.grad for p in model.router.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    if task_repr == "learned":
        assert model.task_emb.weight.grad[tasks].abs().sum() > 0


def test_one_route_per_task_in_a_batch():
    model = make(selection="gumbel").train()
    tasks = torch.tensor([0, 1, 0, 1, 1])
    gates = model.routes(tasks, torch.Generator().manual_seed(0))
    assert gates.shape == (5, model.n_routed, 3)
    torch.testing.assert_close(gates[0], gates[2])  # same task, same Gumbel sample
    torch.testing.assert_close(gates[1], gates[4])
    torch.testing.assert_close(gates.sum(-1), torch.ones(5, model.n_routed, dtype=torch.float64))


@pytest.mark.parametrize("routing", ["average", "random"])
def test_fixed_routing_baselines(routing):
    model = make(routing=routing)
    assert model.router is None
    gates = model.routes(torch.arange(N_TASKS))
    if routing == "average":
        torch.testing.assert_close(gates, torch.full_like(gates, 1 / 3))
    else:
        assert ((gates == 1.0).sum(-1) == 1).all()


def test_generation_stops_at_eos_and_pads_after():
    model = make().eval()
    with torch.no_grad():  # final norm outputs EOS's (enlarged) embedding: EOS is the argmax
        model.embed.weight[2] *= 50
        model.dec_norm.weight.zero_()
        model.dec_norm.bias.copy_(model.embed.weight[2])
    src, _, tasks = batch()
    out = model.generate(src, tasks, max_new=5)
    assert out.shape[1] == 1 and (out[:, 0] == 2).all()


def test_text_representation_is_masked_mean_and_ignores_padding():
    model = make(task_repr="instruction").eval()
    toks = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 0, 0]])
    vec = model.text_representation(toks)
    assert vec.shape == (2, model.cfg.d_model)
    toks2 = toks.clone()
    toks2[1, 3:] = 0
    torch.testing.assert_close(model.text_representation(toks2), vec)


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match="vocab_size"):
        TaskMoETransformer(ModelConfig(), RouterConfig(), 3)
    model = make()
    src, tgt, _ = batch()
    with pytest.raises(ValueError, match="task_ids"):
        model(src, tgt)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, 200, dtype=torch.long), tgt[:1], torch.tensor([0]))


@pytest.mark.skipif(not __import__("minimoe.grouped").grouped.grouped_mm_works("cpu", torch.float32),
                    reason="this torch has no CPU torch._grouped_mm")
@pytest.mark.parametrize("expert_kind", ["layer", "ffn"])
def test_grouped_dispatch_gives_the_sorted_model(expert_kind):
    """The whole hard-routed model with every pool on the grouped path (minimoe/grouped.py):
    the loss and every gradient equal the sorted path's to float32 rounding."""
    from minimoe.fastpool import FastExpertPool

    model = make(expert_kind=expert_kind).float()
    src, tgt, tasks = batch()

    def run(path):
        for pool in (m for m in model.modules() if isinstance(m, FastExpertPool)):
            pool.path = path
        model.zero_grad()
        torch.manual_seed(5)  # the same Gumbel noise on both paths
        loss = model(src, tgt, tasks).float().square().mean()
        loss.backward()
        return [loss] + [p.grad for p in model.parameters()]

    for a, b in zip(run("grouped"), run("sorted")):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
