"""Tests for minimoe/fisher.py: Fisher-information task vectors (task_repr=fisher).

Oracles and properties: the vmap'd Fisher diagonal equals a per-example autograd loop (float64);
the PCA is fitted on the seen tasks only (changing or dropping unseen tasks leaves the seen
vectors bit for bit); the vectors are deterministic for a seed; a task's vector depends on its
labels, not only its inputs; a Fisher-routed model refuses a zero-shot score.
Run: python -m pytest tests/test_fisher.py -q
"""

import dataclasses

import pytest
import torch

from minimoe.batching import TaskData
from minimoe.config import RouterConfig
from minimoe.errors import ConfigError
from minimoe.evaluate import zero_shot
from minimoe.fisher import FisherPCA, fisher_diagonal, fisher_parameter_names, fisher_task_vectors, task_fisher
from minimoe.model import TaskMoETransformer
from minimoe.pipeline import make_context, method_config
from minimoe.presets import PRESETS, apply_overrides
from minimoe.suite import SyntheticSuite, build_suite
from minimoe.tasks import Example
from minimoe.train import seq2seq_loss

pytestmark = pytest.mark.exercise  # runs the whole model (see tests/test_model.py)

SMALL_DATA = {"n_upstream": 8, "n_test": 4, "k_per_class": 2, "k_other": 4}


def dense_model(ctx, seed: int = 0) -> TaskMoETransformer:
    """An (untrained) dense base: the Fisher is defined for any weights."""
    cfg = method_config(ctx.cfg, "dense")
    torch.manual_seed(seed)
    return TaskMoETransformer(ctx.model_config(cfg), RouterConfig(routing="dense"), n_tasks=1)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    cfg = apply_overrides(PRESETS["tiny"], SMALL_DATA)
    return make_context(cfg, build_suite(cfg.data), tmp_path_factory.mktemp("fisher"), quiet=True)


@pytest.fixture(scope="module")
def vectors(ctx):
    """Fisher vectors of every task with the unseen tasks' few-shot train splits of seed 100."""
    return fisher_task_vectors(ctx, dense_model(ctx), d_task=16, few_shot_seed=100)


def classification_task(ctx):
    return next(t for t in ctx.suite.unseen_tasks() if t.labels)


@pytest.mark.parametrize("extra", [[], ["decoder.0.layer.ffn.ffn.0.bias", "embed.weight"]])
def test_fisher_diagonal_equals_a_per_example_autograd_loop(ctx, extra):
    """mean over examples of (∂loss/∂θ)², vmap'd, equals one backward pass per example, each
    example alone and unpadded, through the model's own (fused) forward — float64, tight."""
    model = dense_model(ctx).double()
    task = classification_task(ctx)
    examples = ctx.suite.few_shot(task.name, 100)["train"]
    data = TaskData(ctx.tokenizer, [ctx.suite.source_text(task, ex) for ex in examples],
                    [ex.outputs[0] for ex in examples], [0] * len(examples), model.cfg.max_len)
    names = fisher_parameter_names(model) + extra
    assert names[0].endswith("norm.weight") and len(names) == 2 * 7 + len(extra)  # 7 LayerNorms at tiny
    fast = fisher_diagonal(model, data, names)
    params = dict(model.named_parameters())
    total = 0
    for src, tgt in zip(data.src, data.tgt):
        src, tgt = src[src != 0][None], tgt[tgt != 0][None]  # one example, no padding
        loss = seq2seq_loss(model(src, tgt[:, :-1]), tgt[:, 1:], 0, 0.0)
        grads = torch.autograd.grad(loss, [params[k] for k in names])
        total = total + torch.cat([g.flatten() for g in grads]).pow(2)
    slow = total / len(data)
    assert fast.dtype == torch.float64 and fast.shape == slow.shape
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-16)
    assert (fast > 0).any()


def test_the_pca_is_fitted_on_seen_tasks_only(ctx, vectors):
    """Another data seed (other unseen examples) or fewer unseen tasks: the seen vectors are
    the same bit for bit; the unseen vectors move with their own examples."""
    seen = torch.tensor([t.seen for t in ctx.suite.tasks])
    other_seed = fisher_task_vectors(ctx, dense_model(ctx), d_task=16, few_shot_seed=13)
    assert torch.equal(other_seed[seen], vectors[seen])
    assert not torch.allclose(other_seed[~seen], vectors[~seen])
    suite = ctx.suite
    fewer = SyntheticSuite(suite.cfg, suite.kb, suite.seen_tasks() + suite.unseen_tasks()[:2])
    small = make_context(ctx.cfg, fewer, ctx.run_dir, quiet=True)
    dropped = fisher_task_vectors(small, dense_model(ctx), d_task=16, few_shot_seed=100)
    kept = [ctx.task_index[t.name] for t in fewer.tasks]
    assert torch.equal(dropped, vectors[kept])


def test_seen_vectors_are_centred_at_router_scale_and_padded(vectors, ctx):
    """Standardised with seen statistics: seen vectors centred, mean squared norm d_task; with
    fewer seen tasks than d_task + 1 the axes beyond n_seen − 1 are zeros."""
    seen = torch.tensor([t.seen for t in ctx.suite.tasks])
    assert vectors.shape == (len(ctx.suite.tasks), 16)
    torch.testing.assert_close(vectors[seen].mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(vectors[seen].pow(2).sum(1).mean(), torch.tensor(16.0))
    few = torch.rand(4, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pca = FisherPCA.fit(few, d_task=6)
    projected = pca.project(few)
    assert projected.shape == (4, 6) and torch.equal(projected[:, 3:], torch.zeros(4, 3))
    with pytest.raises(ConfigError, match="at least 2"):
        FisherPCA.fit(few[:1], d_task=6)


def test_vectors_are_deterministic_for_a_seed(ctx, vectors):
    again = fisher_task_vectors(ctx, dense_model(ctx, seed=0), d_task=16, few_shot_seed=100)
    assert torch.equal(again, vectors)
    other = fisher_task_vectors(ctx, dense_model(ctx, seed=1), d_task=16, few_shot_seed=100)
    assert not torch.allclose(other, vectors)


def test_a_tasks_vector_depends_on_its_labels(ctx):
    """Same inputs, labels permuted across its classes (or replaced by another task's classes):
    other Fisher diagonal, other vector — the representation reads the loss, not only the inputs."""
    model = dense_model(ctx)
    task = classification_task(ctx)
    other = next(t for t in ctx.suite.tasks if t.labels and set(t.labels) != set(task.labels))
    examples = ctx.suite.few_shot(task.name, 100)["train"]
    shift = {label: task.labels[(i + 1) % len(task.labels)] for i, label in enumerate(task.labels)}
    permuted = [Example(ex.input, (shift[ex.outputs[0]],)) for ex in examples]
    foreign = [Example(ex.input, (other.labels[task.labels.index(ex.outputs[0]) % len(other.labels)],))
               for ex in examples]
    seen = [t for t in ctx.suite.seen_tasks()]
    pca = FisherPCA.fit(torch.stack([task_fisher(ctx, model, t, ctx.suite.router_examples(t.name))
                                     for t in seen]), d_task=16)
    base = task_fisher(ctx, model, task, examples)
    assert torch.equal(base, task_fisher(ctx, model, task, list(examples)))  # same examples: same diagonal
    for relabelled in (permuted, foreign):
        fisher = task_fisher(ctx, model, task, relabelled)
        assert not torch.allclose(fisher, base, rtol=1e-3)
        assert not torch.allclose(pca.project(fisher[None]), pca.project(base[None]), rtol=1e-3)


def test_fisher_config_and_zero_shot_refusal(ctx):
    """task_repr=fisher is a valid choice; its router reads d_task-wide vectors; a zero-shot
    score is refused with the reason and the fix (its routes come from labelled examples)."""
    with pytest.raises(ConfigError, match="fisher"):
        apply_overrides(ctx.cfg, {"task_repr": "fishr"})
    cfg = apply_overrides(ctx.cfg, {"task_repr": "fisher", "routing": "learned"})
    model = TaskMoETransformer(ctx.model_config(cfg), cfg.router, len(ctx.suite.tasks))
    assert model.routes_from_labels and model.task_vectors.shape == (len(ctx.suite.tasks), cfg.router.d_task)
    assert model.router.w_in.shape[1] == cfg.router.d_task
    task = classification_task(ctx)
    with pytest.raises(ConfigError, match="no zero-shot score.*--task_repr=instruction"):
        zero_shot(model, ctx, task, None)
    text = TaskMoETransformer(ctx.model_config(cfg), dataclasses.replace(cfg.router, task_repr="instruction"), 3)
    assert not text.routes_from_labels
