"""Tests for minimoe/model.py and minimoe/upcycle.py: the routed encoder–decoder as a whole.

Properties: causality of the decoder, batch-permutation equivariance for mixed-task batches,
upcycling with zero noise reproduces the dense model under any routes, `extract(task)` equals
the routed model in eval mode, gradients reach the router, generation stops at EOS.
Exercise 2.1 (`ex2_1`, greedy decoding in `generate`) is checked against a row-by-row reference
with a scripted decoder in place of the network; exercise 3.3 (`ex3_3`, `extract`) weight by weight
against each task's route, with no forward pass.
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


# --- exercise 3.3: extract, checked weight by weight (no forward pass, so no other exercise) ---

def expected_layers(model, chosen):
    """The state dict each dense position must hold: a plain layer as it is, a pooled layer as its
    chosen expert, an ffn pool as the shared layer with the chosen FFN in it (one route entry per pool)."""
    out, i = [], 0
    for pos in list(model.encoder) + list(model.decoder):
        if pos.pool is None:
            out.append(dict(pos.layer.state_dict()))
            continue
        expert = pos.pool.experts[chosen[i]].state_dict()
        i += 1
        if pos.ffn_only:  # the position's own attention and norms, the expert's FFN
            out.append(dict(pos.layer.state_dict()) | {f"ffn.{k}": v for k, v in expert.items()})
        else:
            out.append(dict(expert))
    assert i == len(chosen)
    return out


def assert_holds(dense, model, chosen):
    """dense is the one-expert twin of model holding these experts, and shares its other weights."""
    assert dense.n_routed == 0 and dense.cfg == dataclasses.replace(model.cfg, n_experts=1, routed="none")
    for dst, want in zip(list(dense.encoder) + list(dense.decoder), expected_layers(model, chosen)):
        got = dst.layer.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k].to(got[k].dtype)) for k in want)
    shared = {k: v for k, v in model.state_dict().items() if k.startswith(("embed", "pos", "enc_norm", "dec_norm"))}
    assert shared and all(torch.equal(dense.state_dict()[k], v) for k, v in shared.items())


@pytest.mark.ex3_3
@pytest.mark.parametrize("expert_kind", ["layer", "ffn"])
@pytest.mark.parametrize("routed", ["all", "encoder", "decoder"])
def test_extract_holds_each_positions_chosen_expert(expert_kind, routed):
    """Every task's eval-mode argmax route, position by position; plain positions use no route entry."""
    model = make(expert_kind=expert_kind, routed=routed, seed=3).eval()
    routes = model.task_routes()  # [n l e]
    assert len(set(map(tuple, routes.argmax(-1).tolist()))) > 1  # tasks differ: a fixed expert fails
    for task in range(N_TASKS):
        dense = extract(model, task)
        assert_holds(dense, model, routes[task].argmax(-1).tolist())
        assert not dense.training and not model.training


@pytest.mark.ex3_3
@pytest.mark.parametrize("expert_kind", ["layer", "ffn"])
def test_extract_with_given_gates_keeps_their_argmax(expert_kind):
    """gates [l e] instead of a task: soft gates keep their largest entry per position."""
    model = make(expert_kind=expert_kind, routed="decoder", seed=4).eval()
    gates = torch.tensor([[0.2, 0.1, 0.7], [0.5, 0.3, 0.2]], dtype=torch.float64)  # l = 2 ≠ e = 3
    assert_holds(extract(model, gates=gates), model, [2, 0])
    assert_holds(extract(model, task_id=0, gates=gates.flip(-1)), model, [0, 2])  # gates win over the task


@pytest.mark.ex3_3
def test_extract_from_a_training_model_reads_the_noiseless_route_and_keeps_its_mode():
    """In training the router samples Gumbel noise; extract serves the eval-mode (argmax) route,
    and neither the model's mode nor its own changes: it returns a model in the mode it was given."""
    model = make(selection="gumbel", seed=5)
    with torch.no_grad():  # nearly flat logits: a sampled route is rarely the argmax route
        for p in model.router.parameters():
            p.mul_(1e-3)
    model.eval()
    routes = model.task_routes().argmax(-1)  # [n l]
    model.train()
    for task in range(N_TASKS):
        dense = extract(model, task)
        assert model.training and dense.training
        assert_holds(dense, model, routes[task].tolist())


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


# --- exercise 2.1: greedy decoding, with a scripted decoder ------------------------------------
# A fake encode/decode pair stands in for the network, so these tests need no other exercise.
# The scripted "language model" picks the next token from the *whole* prefix (its length and its
# sum) and from the row's source, and says EOS once the prefix reaches that row's stop length.

BOS, EOS, PAD = 1, 2, 0


def script(row_key: int, prefix: list[int], stops: dict[int, int]) -> int:
    """The token the scripted model puts after `prefix` (BOS first) for the row keyed row_key."""
    if len(prefix) >= stops[row_key]:
        return EOS
    return 3 + (row_key * 31 + 7 * sum(prefix) + len(prefix)) % (V - 3)


def scripted(model: TaskMoETransformer, stops: dict[int, int]) -> dict[str, int]:
    """Replace model.encode / model.decode by the script; returns call counts."""
    calls = {"encode": 0, "decode": 0}

    def encode(src, src_pad, gates):
        calls["encode"] += 1
        return src[:, :1, None].double()  # [b 1 1]: the row's key, read back by decode

    def decode(tgt_in, memory, src_pad, gates):
        calls["decode"] += 1
        b, t = tgt_in.shape
        assert t <= model.cfg.max_len, "a prefix longer than max_len does not fit the position table"
        logits = torch.zeros(b, t, V, dtype=torch.float64)
        for i in range(b):
            for j in range(t):  # every position, as the real decoder: the last one is the next token
                logits[i, j, script(int(memory[i, 0, 0]), tgt_in[i, : j + 1].tolist(), stops)] = 1.0
        return logits

    model.encode, model.decode = encode, decode
    return calls


def reference_greedy(keys: list[int], stops: dict[int, int], max_new: int, max_len: int) -> torch.Tensor:
    """Row by row: decode until EOS or the cap; then pad the rows to the longest."""
    rows = []
    for key in keys:
        prefix = [BOS]
        while len(prefix) - 1 < min(max_new, max_len - 1) and prefix[-1] != EOS:
            prefix.append(script(key, prefix, stops))
        rows.append(prefix[1:])
    width = max(map(len, rows))
    return torch.tensor([row + [PAD] * (width - len(row)) for row in rows])


KEYS = [5, 9, 12, 17]
STOPS = {5: 2, 9: 4, 12: 6, 17: 100}  # EOS after 1, 3 and 5 tokens; the last row never stops


@pytest.mark.ex2_1
@pytest.mark.parametrize("max_new", [1, 3, 4, 8, 100])
def test_greedy_decoding_equals_a_row_by_row_reference(max_new):
    """Argmax of the last position of the whole prefix; EOS kept, then pad; the cap min(max_new, max_len − 1)."""
    model = make(n_experts=1).eval()
    calls = scripted(model, STOPS)
    src = torch.tensor(KEYS)[:, None].repeat(1, 3)
    out = model.generate(src, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new=max_new)
    expected = reference_greedy(KEYS, STOPS, max_new, model.cfg.max_len)
    assert out.dtype == torch.long and out.shape == expected.shape, (out.shape, expected.shape)
    assert torch.equal(out, expected), f"\n{out}\n!=\n{expected}"
    assert calls["encode"] == 1, "the memory does not change while decoding: encode once"


@pytest.mark.ex2_1
def test_decoding_stops_when_every_row_has_finished():
    model = make(n_experts=1).eval()
    calls = scripted(model, {5: 2, 9: 3})
    out = model.generate(torch.tensor([[5, 5], [9, 9]]), bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new=10)
    assert out.shape == (2, 3) and out[0, 1] == EOS and out[0, 2] == PAD and out[1, 2] == EOS
    assert calls["decode"] == 3, "no decoding step after the last row has finished"
    calls = scripted(model, {5: 1})
    out = model.generate(torch.tensor([[5], [5], [5]]), bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new=10)
    assert out.tolist() == [[EOS]] * 3 and calls["decode"] == 1


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
