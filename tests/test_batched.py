"""Tests for minimoe/batched.py: many few-shot fine-tunes at once, against the unbatched oracle.

Oracles: in float64 (but the float32 loss of `train.seq2seq_loss`: float32 rounding, which AdamW's
division by √v lifts to ~1e-8 in the weights), N stacked copies fine-tuned together have the losses and parameters of N
`train.fit` runs as `evaluate.few_shot` makes them (soft, one-hot and no routes; two lrs; data
seeds whose batches differ in shape); vmapped greedy decoding gives `evaluate.predict`'s texts;
`few_shot_many` gives `few_shot`'s scores and lrs; a tiny study cell gives the same few-shot
scores batched and unbatched. Properties: a zero-gated expert stays as it was; the phase timers
count nested time once. Run: python -m pytest tests/test_batched.py -q
"""

import copy
import dataclasses
import json
import time

import pytest
import torch

from minimoe import batched
from minimoe.evaluate import FixedRoute, few_shot, predict, task_data
from minimoe.model import TaskMoETransformer
from minimoe.phases import phase, take_phases
from minimoe.pipeline import make_context, method_config
from minimoe.presets import PRESETS, apply_overrides
from minimoe.reproduce import run_cell
from minimoe.suite import build_suite
from minimoe.train import fit

pytestmark = pytest.mark.exercise  # runs the whole model (see tests/test_model.py)

SMALL = {"n_upstream": 8, "n_test": 8, "k_per_class": 2, "k_other": 4, "fs_steps": 3, "fs_lrs": "1e-3,3e-3"}
SEEDS = (100, 13)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    cfg = apply_overrides(PRESETS["tiny"], SMALL)
    return make_context(cfg, build_suite(cfg.data), tmp_path_factory.mktemp("batched"), quiet=True)


def upstream(ctx, method: str, dtype=torch.float64) -> TaskMoETransformer:
    """An untrained model of `method` (fine-tuning is defined for any weights), in eval mode."""
    cfg = method_config(ctx.cfg, method)
    torch.manual_seed(0)
    return TaskMoETransformer(ctx.model_config(cfg), cfg.router, len(ctx.suite.tasks)).to(dtype).eval()


def routes(model, kind: str, n: int):
    """n routes [l e]: soft (random softmax), one-hot, or None (a dense model)."""
    if not model.n_routed:
        return [None] * n
    logits = torch.randn(n, model.n_routed, model.cfg.n_experts, generator=torch.Generator().manual_seed(1))
    gates = torch.softmax(logits, -1) if kind == "soft" else torch.nn.functional.one_hot(logits.argmax(-1), 3)
    return list(gates.to(torch.float64))


def unbatched(model, ctx, job):
    """evaluate.few_shot's fit for one job → (fine-tuned model, losses per step)."""
    tuned = FixedRoute(copy.deepcopy(model), job.gates)
    for name, p in tuned.named_parameters():
        p.requires_grad_(not name.startswith(("model.router.", "model.task_emb.")))
    train = task_data(ctx, job.task, ctx.suite.few_shot(job.task.name, job.seed)["train"])
    bs = min(ctx.cfg.train.fs_batch_size, len(train))
    state = fit(tuned, lambda g: train.sample(bs, g), ctx.cfg, steps=ctx.cfg.train.fs_steps, device=ctx.device,
                desc="oracle", lrs=(job.lr,) * 3, seed_offset=job.seed, quiet=True)
    return tuned.model, [loss for _, loss in state.history]


@pytest.mark.parametrize("method,kind,experts", [("average", "soft", "layer"), ("learned", "soft", "layer"),
                                                 ("learned", "one_hot", "layer"), ("learned", "one_hot", "ffn"),
                                                 ("dense", None, "layer")])
def test_stacked_fine_tunes_equal_unbatched_fits(ctx, method, kind, experts):
    ctx = dataclasses.replace(ctx, cfg=apply_overrides(ctx.cfg, {"expert_kind": experts}))
    model = upstream(ctx, method)
    tasks = ctx.suite.unseen_tasks()[:2]
    gates = routes(model, kind, len(tasks))
    jobs = [batched.Job(t, s, 3e-3, gates[i]) for i, t in enumerate(tasks) for s in SEEDS]
    params, history = batched.fine_tune(model, ctx, jobs)
    before = dict(model.named_parameters())
    for i, job in enumerate(jobs):
        tuned, losses = unbatched(model, ctx, job)
        assert history[i] == pytest.approx(losses, rel=1e-6)  # the loss is float32 (train.seq2seq_loss)
        for name, p in tuned.named_parameters():
            if name in params:
                torch.testing.assert_close(params[name][i], p.detach(), rtol=0, atol=1e-7, msg=name)
            else:  # the route is fixed: router and task embeddings never move
                assert name.startswith(batched.FROZEN) and torch.equal(p, before[name])
        if kind == "one_hot":  # an expert the route leaves out keeps its weights exactly
            unused = job.gates[0].argmin()
            key = next(n for n in params if n.startswith(f"encoder.0.pool.experts.{unused}.") and "weight" in n)
            assert torch.equal(params[key][i], before[key].detach())


@pytest.mark.parametrize("kind", ["soft", "one_hot"])
def test_vmapped_decoding_gives_the_predictions_of_predict(ctx, kind):
    model = upstream(ctx, "average")
    tasks = ctx.suite.unseen_tasks()[:3]
    jobs = [batched.Job(t, 100, 1e-3, g) for t, g in zip(tasks, routes(model, kind, len(tasks)))]
    params = batched.fine_tune(model, ctx, jobs)[0]
    splits = [ctx.suite.few_shot(t.name, 100)["test"] for t in tasks]
    preds = batched.predict_stacked(model, ctx, params, jobs, splits)
    for i, (job, examples) in enumerate(zip(jobs, splits)):
        tuned = copy.deepcopy(model)
        tuned.load_state_dict({**tuned.state_dict(), **{n: p[i] for n, p in params.items()}})
        assert preds[i] == predict(tuned, ctx, job.task, examples, job.gates)


def test_one_hot_routes_run_the_chosen_expert_alone(ctx):
    model = upstream(ctx, "learned")
    soft, hard = (torch.stack(routes(model, kind, 2)) for kind in ("soft", "one_hot"))
    assert batched.one_hot(hard) and not batched.one_hot(soft) and not batched.one_hot(None)
    pools = [pos.pool for pos in batched.vmappable(model, chosen=True).encoder]
    assert all(isinstance(pool, batched.Chosen) for pool in pools)
    x, gates = torch.randn(4, 5, model.cfg.d_model, dtype=torch.float64), hard[0, 0].expand(4, -1)
    mixture = batched.vmappable(model).encoder[0].pool  # every expert, weighted: 1 · f_chosen + exact zeros
    assert torch.equal(pools[0](x, gates), mixture(x, gates))


def test_few_shot_many_gives_the_scores_of_few_shot(ctx):
    model = upstream(ctx, "learned")
    tasks = ctx.suite.unseen_tasks()[:3]
    items = [(t, s, g) for t, g in zip(tasks, routes(model, "soft", len(tasks))) for s in SEEDS]
    many = batched.few_shot_many(model, ctx, items)
    assert many == [few_shot(model, ctx, t, s, g) for t, s, g in items]


def test_a_one_lr_grid_skips_the_dev_score_in_both_paths(ctx):
    model = upstream(ctx, "average")
    one = dataclasses.replace(ctx, cfg=apply_overrides(ctx.cfg, {"fs_lrs": "1e-3"}))
    tasks = ctx.suite.unseen_tasks()[:2]
    items = [(t, 100, g) for t, g in zip(tasks, routes(model, "soft", len(tasks)))]
    many = batched.few_shot_many(model, one, items)
    assert many == [few_shot(model, one, t, s, g) for t, s, g in items]
    assert all(m["dev"] is None and m["lr"] == 1e-3 and m["test"] >= 0.0 for m in many)


def test_a_tiny_study_cell_scores_the_same_batched_and_unbatched(tmp_path):
    base = apply_overrides(PRESETS["tiny"], {**SMALL, "steps": 8, "pretrain_steps": 4, "fs_steps": 2,
                                             "eval_every": 4, "n_upstream": 16})
    cells = {}
    for on in (False, True):
        cfg = apply_overrides(base, {"fs_batched": on})
        cells[on] = run_cell(cfg, "average", 0, (100, 13), tmp_path / str(on), resplit=True)
    assert cells[True]["few_shot"] == cells[False]["few_shot"]
    assert cells[True]["zero_shot"] == cells[False]["zero_shot"]
    saved = json.loads((tmp_path / "True" / "seed0" / "average.json").read_text())
    assert {"pretrain", "upstream", "few_shot_tune", "few_shot_eval"} <= set(saved["phase_seconds"])


def test_nested_phases_count_each_second_once():
    take_phases()
    with phase("outer"):
        time.sleep(0.02)
        with phase("inner"):
            time.sleep(0.05)
        time.sleep(0.02)
    seconds = take_phases()
    assert 0.05 <= seconds["inner"] and 0.04 <= seconds["outer"] < 0.05 + 0.04
    assert take_phases() == {}


def test_bench_xl_size_runs_quick(tmp_path):
    from minimoe.bench import run_bench

    result = run_bench(quick=True, device="cpu", rounds=1, size="xl")
    assert set(result["sizes"]) == {"xl"} and result["hard_over_dense"] > 0
    assert "threads_sweep" not in result  # the thread sweep times the small size only


def test_study_benchmark_refuses_too_few_steps(capsys):
    from minimoe.cli import main as cli

    assert cli(["bench", "--study", "--study_steps", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: --study_steps=1")


@pytest.mark.slow
def test_study_benchmark_writes_the_speedup_and_the_phase_split(tmp_path):
    from minimoe.bench_study import format_study, run_study

    result = run_study("tiny", steps=2, quick=True)
    assert result["same_few_shot_scores"] and result["study_speedup"] > 0
    assert result["ceiling_speedup"] >= 1.0 and "Amdahl" in format_study(result)
    assert {"upstream", "few_shot_tune", "few_shot_eval"} <= set(result["phases"]["batched"])
    assert "study_speedup" in format_study(result)


@pytest.mark.slow
def test_a_tiny_study_agrees_cell_by_cell(tmp_path):
    """The cells of a quick resplit study (token falls back to one by one), batched and unbatched:
    the same scores
    (float tolerance may flip a rare greedy token, far inside the seed-level noise)."""
    from minimoe.reproduce import reproduce
    from minimoe.repro_report import QUICK

    cfg = apply_overrides(PRESETS["tiny"], {**QUICK, "steps": 8, "pretrain_steps": 4, "fs_steps": 2})
    cells = ("dense", "average", "random", "learned", "two_stage", "fisher", "token")  # random: one-hot routes
    for on in (False, True):
        reproduce(apply_overrides(cfg, {"fs_batched": on}), tmp_path / str(on), (0,), (100, 13),
                  cells, resplit=True, quick=True)
    for name in cells:
        a, b = (json.loads((tmp_path / str(on) / "seed0" / f"{name}.json").read_text()) for on in (False, True))
        diffs = [abs(x - y) for t in a["few_shot"] for x, y in zip(a["few_shot"][t], b["few_shot"][t])]
        assert set(a["few_shot"]) == set(b["few_shot"]) and sum(diffs) / len(diffs) <= 0.01, name
