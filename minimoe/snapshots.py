"""What an upstream stage records at every checkpoint: the routes and the held-out loss.

- Route dynamics: the eval-mode routes of every task [n l e] at each checkpoint, saved to
  run_dir/routes/<stage>/stepNNNNNN.npy (`figures.plot_route_dynamics` draws them).
- The eval curve: with `Context.track_held_out`, the training loss on HELD_OUT_PER_TASK held-out
  examples of every seen task, appended to run_dir/HELD_OUT_FILE. It runs in eval mode and draws
  no random numbers, so training continues exactly as without it.

`ctx` is a `minimoe/pipeline.py::Context` (suite, tokenizer, task index, device, run folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from minimoe.batching import TaskData
from minimoe.config import Config
from minimoe.device import autocast_context
from minimoe.model import TaskMoETransformer
from minimoe.train import seq2seq_loss

HELD_OUT_PER_TASK = 16  # held-out examples per seen task in the eval curve: a small fixed sample, cheap per checkpoint
HELD_OUT_FILE = "held_out_loss.jsonl"  # in the run directory: one {"stage", "step", "loss"} per checkpoint


def route_snapshot(model: TaskMoETransformer) -> np.ndarray:
    """Eval-mode routes of every task → [n l e] (empty for a dense model)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        routes = model.task_routes().float().cpu().numpy() if model.n_routed else np.zeros((0, 0, 0))
    model.train(was)
    return routes


def held_out_data(ctx, cfg: Config) -> TaskData:
    """The first HELD_OUT_PER_TASK held-out examples of every seen task, in one dataset."""
    sources, targets, ids = [], [], []
    for task in ctx.suite.seen_tasks():
        for ex in ctx.suite.held_out(task.name)[:HELD_OUT_PER_TASK]:
            sources.append(ctx.suite.source_text(task, ex))
            targets.append(ex.outputs[0])
            ids.append(ctx.task_index[task.name])
    return TaskData(ctx.tokenizer, sources, targets, ids, cfg.model.max_len, ctx.device)


@torch.no_grad()
def held_out_loss(model: TaskMoETransformer, data: TaskData, cfg: Config, device: torch.device,
                  batch_size: int = 256) -> float:
    """The training loss (label-smoothed, per target token) on `data`, in eval mode: no noise,
    no RNG drawn, the model left as it was, so training continues exactly as without it."""
    was, total, tokens = model.training, 0.0, 0
    model.eval()
    for batch in data.batches(batch_size):
        with autocast_context(device):
            logits = model(batch.src, batch.tgt_in, batch.task)
        n = int((batch.labels != 0).sum())  # pad id 0, as in training
        total += seq2seq_loss(logits, batch.labels, 0, cfg.train.label_smoothing).item() * n
        tokens += n
    model.aux_loss()  # forget token routing's auxiliary losses of these forwards: training takes only its own
    model.train(was)
    return total / max(tokens, 1)


def checkpoint_hook(ctx, cfg: Config, model: TaskMoETransformer, stage: str, routes: bool):
    """What runs at every checkpoint of an upstream stage: save the routes [n l e] to
    run_dir/routes/<stage>/stepNNNNNN.npy (route dynamics) and, with ctx.track_held_out, append
    the held-out loss to run_dir/HELD_OUT_FILE (a resumed stage appends again: readers keep the last)."""
    data = held_out_data(ctx, cfg) if ctx.track_held_out else None

    def on_checkpoint(step: int) -> None:
        if routes and model.n_routed:
            snap_dir = ctx.run_dir / "routes" / stage
            snap_dir.mkdir(parents=True, exist_ok=True)
            np.save(snap_dir / f"step{step:06d}.npy", route_snapshot(model))
        if data is not None:
            loss = held_out_loss(model, data, cfg, ctx.device)
            with open(ctx.run_dir / HELD_OUT_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps({"stage": stage, "step": step, "loss": loss}) + "\n")
    return on_checkpoint


def held_out_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{stage: [(step, held-out loss)]} from run_dir/HELD_OUT_FILE, one point per step (the last written)."""
    path, points = Path(run_dir) / HELD_OUT_FILE, {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            points.setdefault(rec["stage"], {})[rec["step"]] = rec["loss"]
    return {stage: sorted(by_step.items()) for stage, by_step in points.items()}
