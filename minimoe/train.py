"""The training loop shared by every stage: pre-training, upstream, stage 2, few-shot.

`fit()` runs AdamW with warmup + linear decay, label smoothing and gradient clipping
(lessons/paper_facts.md, "Training"), anneals the router temperature, shows a tqdm bar (loss, τ, steps/s,
ETA), and keeps the run safe:
- a checkpoint is written atomically every `eval_every` steps and when training ends;
- Ctrl-C (and SIGTERM, SIGHUP: minimoe/interrupt.py) takes effect between two steps (a step is
  applied whole or not at all), writes a checkpoint of that step, then raises `TrainingInterrupted`;
- a non-finite loss raises `NonFiniteLoss` *before* the bad step is applied, so the last good
  checkpoint stays the newest one;
- an existing checkpoint is resumed (model, optimizer, schedule, every RNG), so the resumed
  run continues exactly as the uninterrupted one would have.

One step of the loop is `train_step` (exercise 6.1, lesson 06).

Read next: `minimoe/pipeline.py` (the stages in order).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from tqdm.auto import tqdm

from minimoe.batching import Batch
from minimoe.checkpoint import check_config, load_checkpoint, load_model_state, save_checkpoint
from minimoe.config import Config
from minimoe.device import autocast_context, make_optimizer
from minimoe.errors import MinimoeError
from minimoe.interrupt import until_step_end


PAD_ID = 0  # <pad> is the first special token of every tokenizer (minimoe/vocab.py::SPECIALS)


class NonFiniteLoss(MinimoeError, RuntimeError):
    """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


class TrainingInterrupted(MinimoeError, KeyboardInterrupt):
    """Ctrl-C or SIGTERM: a checkpoint of the current step was written; resume with --resume."""


def seq2seq_loss(logits: Tensor, labels: Tensor, pad_id: int, smoothing: float) -> Tensor:
    """Label-smoothed cross-entropy over real target tokens: logits [b t v], labels [b t]."""
    return F.cross_entropy(rearrange(logits.float(), "b t v -> (b t) v"), rearrange(labels, "b t -> (b t)"),
                           ignore_index=pad_id, label_smoothing=smoothing)


def lr_factor(step: int, total: int, warmup_frac: float) -> float:
    """Linear warmup for warmup_frac of the steps, then linear decay to 0 (BART's schedule)."""
    warmup = max(1, int(total * warmup_frac))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def param_groups(model: nn.Module, lr: float, lr_router: float, lr_task: float) -> list[dict]:
    """Three learning rates as in the paper: experts/shared, router MLP, task embeddings."""
    groups = {"main": [], "router": [], "task": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # ".router.": a token router inside a layer (minimoe/token_router.py) learns like the task router.
        is_router = name.startswith("router.") or ".router." in name
        key = "router" if is_router else "task" if name.startswith("task_emb.") else "main"
        groups[key].append(p)
    rates = {"main": lr, "router": lr_router, "task": lr_task}
    return [{"params": ps, "lr": rates[k], "name": k} for k, ps in groups.items() if ps]


@dataclass
class FitState:
    """What a stage returns and checkpoints: the loss history as (step, loss) pairs."""

    history: list[tuple[int, float]] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0


def fit(model: nn.Module, next_batch: Callable[[torch.Generator], Batch], cfg: Config, *,
        steps: int, device: torch.device, desc: str, ckpt_path: str | Path | None = None,
        tau_fn: Callable[[int], float] | None = None, lrs: tuple[float, float, float] | None = None,
        seed_offset: int = 0, quiet: bool = False,
        on_checkpoint: Callable[[int], None] | None = None) -> FitState:
    """Train `model` for `steps` steps on batches from `next_batch(generator)`.

    ckpt_path: checkpoint every cfg.train.eval_every steps and at the end; an existing checkpoint
    there is resumed. tau_fn(step): the router temperature of each step. lrs: (experts, router,
    task embeddings), default from cfg.train. seed_offset: separates the data and route RNGs of
    different stages. on_checkpoint(step) runs at every checkpoint (e.g. to snapshot routes); it
    must not change the model. desc, quiet: the progress bar's label, or no bar.
    """
    tc = cfg.train
    lrs = lrs or (tc.lr, tc.lr_router, tc.lr_task)
    opt = make_optimizer(param_groups(model, *lrs), device, tc.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    data_gen = torch.Generator().manual_seed(tc.seed * 1000 + seed_offset)
    route_gen = torch.Generator().manual_seed(tc.seed * 1000 + seed_offset + 1)
    state = FitState()
    ckpt_path = Path(ckpt_path) if ckpt_path else None
    if ckpt_path and ckpt_path.is_file():
        state = _restore(ckpt_path, model, opt, data_gen, route_gen, cfg, device)

    def save(step: int) -> None:
        if on_checkpoint is not None:
            on_checkpoint(step)
            model.train()
        if ckpt_path:
            save_checkpoint(ckpt_path, _snapshot(model, opt, data_gen, route_gen, state, step), cfg)

    bar = tqdm(total=steps, initial=state.step, desc=desc, disable=quiet, dynamic_ncols=True, leave=False)
    start = time.perf_counter() - state.seconds
    model.train()
    try:
        with until_step_end() as stop:
            for step in range(state.step, steps):
                if tau_fn is not None:
                    model.tau = tau_fn(step)
                loss = train_step(model, opt, next_batch(data_gen), cfg, device, step=step, steps=steps,
                                  base_lrs=base_lrs, generator=route_gen, where=f"{desc} step {step}",
                                  ckpt=ckpt_path)
                state.step, state.seconds = step + 1, time.perf_counter() - start
                state.history.append((step, loss))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tau=f"{getattr(model, 'tau', 0):.2f}", refresh=False)
                if (step + 1) % tc.eval_every == 0 and step + 1 < steps:
                    save(step + 1)
                if stop:  # Ctrl-C or SIGTERM arrived during this step: stop now that it is whole
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        save(state.step)
        bar.close()
        where = f"checkpoint saved to {ckpt_path}" if ckpt_path else "this stage keeps no checkpoint and restarts"
        raise TrainingInterrupted(f"interrupted at {desc} step {state.step}; {where}. Resume by "
                                  "running the same command with --resume.") from None
    except Exception:
        bar.close()  # a bar left on screen would share its line with the error message
        raise
    bar.close()
    save(state.step)
    return state


def train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: Batch, cfg: Config, device: torch.device,
               *, step: int, steps: int, base_lrs: list[float], generator: torch.Generator | None = None,
               where: str = "training", ckpt: str | Path | None = None) -> float:
    """Step `step` (0-based) of a `steps`-step stage on one batch; returns the loss as a float.

    The forward pass below gives logits [b t v] for batch.tgt_in [b t]. The step then
    - sets each of opt.param_groups' learning rates to its base rate (base_lrs, same order) ×
      lr_factor(step, steps, cfg.train.warmup_frac): the schedule, recomputed every step;
    - computes the loss: `seq2seq_loss` of the logits against batch.labels [b t] (PAD_ID is
      padding; label smoothing cfg.train.label_smoothing), plus `model.aux_loss()` if the model
      has that method (token routing's load balancing, lesson 09; 0.0 for task routing);
    - if the loss is not finite, raises `non_finite_error(loss, where, ckpt)` before the
      parameters or the optimizer's state change;
    - else back-propagates this step's loss alone, clips the total gradient norm of all
      parameters to cfg.train.grad_clip, and applies the optimizer.
    """
    with autocast_context(device):
        logits = model(batch.src, batch.tgt_in, batch.task, pad_id=PAD_ID, generator=generator)
    # BEGIN EXERCISE 6.1: one training step
    # HINT: the schedule scales the *base* rates; a group's "lr" still holds the last step's.
    # HINT: not every model has an aux_loss method: getattr with a default of None tells.
    # HINT: check the loss before the step changes anything; gradients add up across backward calls.
    tc = cfg.train
    for group, base in zip(opt.param_groups, base_lrs):
        group["lr"] = base * lr_factor(step, steps, tc.warmup_frac)
    loss = seq2seq_loss(logits, batch.labels, PAD_ID, tc.label_smoothing)
    aux_loss = getattr(model, "aux_loss", None)  # TaskMoETransformer, FixedRoute; not a bare module
    if aux_loss is not None:  # token routing's load-balancing + z-loss (0.0 for other models)
        loss = loss + aux_loss()
    if not torch.isfinite(loss):
        raise non_finite_error(loss, where, ckpt)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    opt.step()
    return loss.item()
    # END EXERCISE 6.1


def non_finite_error(loss: Tensor, where: str, ckpt: str | Path | None) -> NonFiniteLoss:
    """The error for a non-finite loss at `where`; the step was not applied."""
    return NonFiniteLoss(f"non-finite loss ({loss.item()}) at {where}; the step was not applied "
                         f"and the last good checkpoint ({ckpt}) is kept. Lower --lr or "
                         f"--lr_router, or raise --tau_min.")


def _snapshot(model, opt, data_gen, route_gen, state: FitState, step: int) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
            "seconds": state.seconds, "history": [list(h) for h in state.history[:step]],
            "tau": float(getattr(model, "tau", 0.0)), "rng_torch": torch.get_rng_state(),
            "rng_data": data_gen.get_state(), "rng_route": route_gen.get_state()}


def _restore(path: Path, model, opt, data_gen, route_gen, cfg: Config, device) -> FitState:
    # Load to CPU: RNG states must stay CPU ByteTensors (a CUDA map_location broke resuming on
    # CUDA); load_state_dict copies weights to the model's device, the optimizer its state.
    ckpt = load_checkpoint(path, map_location="cpu")
    check_config(ckpt["config"], cfg)
    load_model_state(model, ckpt["model"], str(path))
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng_torch"])
    data_gen.set_state(ckpt["rng_data"])
    route_gen.set_state(ckpt["rng_route"])
    model.tau = ckpt["tau"]
    history = [(int(s), float(v)) for s, v in ckpt["history"]]
    return FitState(history=history, step=int(ckpt["step"]), seconds=float(ckpt["seconds"]))


def ensure_finite(value: float, what: str) -> float:
    """Raise NonFiniteLoss for a NaN/inf metric (used by evaluation summaries)."""
    if not math.isfinite(value):
        raise NonFiniteLoss(f"{what} is not finite ({value}).")
    return value
