"""Scoring a model on a task, routing unseen tasks, and few-shot / zero-shot adaptation.

- `evaluate(model, ctx, task, examples, gates)` decodes greedily and scores with the task's
  metric (EM, accuracy or macro-F1 against every acceptable output).
- `unseen_route(model, ctx, task, dev)` gives an unseen task its own route (a
  shared default route would make any gain luck):
    * a router over text vectors (`instruction` / `examples`) routes it directly, with no
      gradient step — the paper's zero-shot setting;
    * a router over Fisher vectors (`fisher`, `minimoe/fisher.py`) routes it directly too, but
      its vector comes from the loss on its labelled few-shot train set: few-shot only;
    * learned task embeddings have nothing to say about a new task, so the candidate routes
      of the seen tasks are scored on the few-shot dev set and the best is kept.
- `few_shot(...)` fine-tunes a copy of the model on the task's k-shot train set with its route
  fixed, for each learning rate of the grid, and reports the test score of the best on dev.

Read next: `minimoe/report.py`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from minimoe.batching import TaskData
from minimoe.errors import ConfigError
from minimoe.metrics import score
from minimoe.model import TaskMoETransformer
from minimoe.phases import phase
from minimoe.train import fit


class FixedRoute(nn.Module):
    """A routed model with one task's gates [l e] fixed: what few-shot fine-tuning trains."""

    def __init__(self, model: TaskMoETransformer, gates: Tensor | None):
        super().__init__()
        self.model = model
        self.register_buffer("gates", gates if gates is None else gates.detach().clone())

    def forward(self, src, tgt_in, task=None, pad_id: int = 0, generator=None):
        gates = None if self.gates is None else self.gates.expand(src.shape[0], -1, -1)
        return self.model(src, tgt_in, gates=gates, pad_id=pad_id)

    def aux_loss(self):
        """The wrapped model's auxiliary loss (token routing), so the trainer sees it."""
        return self.model.aux_loss()


def task_data(ctx, task, examples, max_len: int | None = None) -> TaskData:
    sources = [ctx.suite.source_text(task, ex) for ex in examples]
    targets = [ex.outputs[0] for ex in examples]
    ids = [ctx.task_index[task.name]] * len(examples)
    return TaskData(ctx.tokenizer, sources, targets, ids, max_len or ctx.cfg.model.max_len, ctx.device)


@torch.no_grad()
def predict(model: TaskMoETransformer, ctx, task, examples, gates: Tensor | None, batch_size: int = 128) -> list[str]:
    """Greedy predictions (texts) for examples of one task routed by gates [l e] (or None)."""
    model.eval()
    data, tok, preds = task_data(ctx, task, examples), ctx.tokenizer, []
    max_new = 2 + max(len(tok.encode(o)) for ex in examples for o in ex.outputs)
    for batch in data.batches(batch_size):
        g = None if gates is None else gates.expand(batch.src.shape[0], -1, -1)
        out = model.generate(batch.src, gates=g, bos_id=tok.bos_id, eos_id=tok.eos_id,
                             pad_id=tok.pad_id, max_new=max_new)
        preds.extend(tok.decode(row.tolist()) for row in out)
    return preds


def evaluate(model, ctx, task, examples, gates: Tensor | None) -> float:
    """The task's metric (0–1) on examples."""
    preds = predict(model, ctx, task, examples, gates)
    return score(task.metric, preds, [ex.outputs for ex in examples], task.labels)


def seen_route(model: TaskMoETransformer, ctx, task) -> Tensor | None:
    """The eval-mode route [l e] of a task the router knows (None for a dense model)."""
    if not model.n_routed:
        return None
    model.eval()
    with torch.no_grad():
        return model.task_routes()[ctx.task_index[task.name]]


def candidate_routes(model: TaskMoETransformer, ctx, limit: int = 8) -> list[Tensor]:
    """Distinct eval-mode routes of the seen tasks (by argmax expert per layer), most shared first.

    At most `limit` candidates: each one costs a dev-set evaluation per unseen task.
    """
    model.eval()
    with torch.no_grad():
        routes = model.task_routes()
    rows = [routes[ctx.task_index[t.name]] for t in ctx.suite.seen_tasks()]
    keys = [tuple(r.argmax(-1).tolist()) for r in rows]
    order = sorted(set(keys), key=lambda k: (-keys.count(k), keys.index(k)))[:limit]
    return [rows[keys.index(k)] for k in order]


def unseen_route(model: TaskMoETransformer, ctx, task, dev) -> Tensor | None:
    """A route [l e] for an unseen task (see the module docstring for the two cases)."""
    if not model.n_routed:
        return None
    if model.router is None or model.task_emb is None:
        # Fixed routes (average / random) and text-vector routers route any task directly.
        return seen_route(model, ctx, task)
    best, best_score = None, -1.0
    for gates in candidate_routes(model, ctx):
        s = evaluate(model, ctx, task, dev, gates)
        if s > best_score:
            best, best_score = gates, s
    return best


def few_shot(model: TaskMoETransformer, ctx, task, seed: int, gates: Tensor | None) -> dict:
    """Fine-tune on the k-shot train set per lr, pick on dev, score test → {"dev", "lr", "test"}
    ("dev" is None for a one-lr grid: nothing to pick)."""
    split = ctx.suite.few_shot(task.name, seed)
    train = task_data(ctx, task, split["train"])
    tc = ctx.cfg.train
    best = {"dev": -1.0}
    grid = tc.fs_lr_grid
    for lr in grid:
        tuned = FixedRoute(copy.deepcopy(model), gates)
        for name, p in tuned.named_parameters():  # the route is fixed: only experts and shared weights learn
            p.requires_grad_(not name.startswith(("model.router.", "model.task_emb.")))
        bs = min(tc.fs_batch_size, len(train))
        with phase("few_shot_tune"):
            fit(tuned, lambda g: train.sample(bs, g), ctx.cfg, steps=tc.fs_steps, device=ctx.device,
                desc=f"few-shot {task.name}", lrs=(lr, lr, lr), seed_offset=seed, quiet=True)
        with phase("few_shot_eval"):
            # dev only picks the lr: a grid of one has nothing to pick, so dev is not scored (None)
            dev = evaluate(tuned.model, ctx, task, split["dev"], gates) if len(grid) > 1 else None
            if dev is None or dev > best["dev"]:
                best = {"dev": dev, "lr": lr, "test": evaluate(tuned.model, ctx, task, split["test"], gates)}
    return best


def zero_shot(model: TaskMoETransformer, ctx, task, gates: Tensor | None) -> float:
    """Test score with no gradient step (the route comes from `unseen_route`).

    A Fisher-routed model has no zero-shot score: its route for the task was made from labelled
    examples (ConfigError)."""
    if model.routes_from_labels:
        raise ConfigError(f"task {task.name!r}: task_repr='fisher' routes an unseen task from the Fisher "
                          "information of its labelled few-shot examples, so it has no zero-shot score; "
                          "score it few-shot, or use --task_repr=instruction for zero-shot routing.")
    return evaluate(model, ctx, task, ctx.suite.few_shot(task.name, 100)["test"], gates)
