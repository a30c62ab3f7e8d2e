"""Training on many processes with PyTorch DistributedDataParallel (data parallelism).

    torchrun --nproc_per_node=2 -m minimoe.distributed --preset=small --steps=600

Every process (rank) holds a full copy of the model. Each step, every rank draws the *same*
global batch (same seeded generator) and the same task routes, keeps its own slice of rows,
runs forward and backward on it, and DDP all-reduces (averages) the gradients while backward
runs; then every rank applies the identical AdamW step, so the copies never drift apart.
Communication is DDP's only (gloo on CPU, NCCL on CUDA); nothing is hand-written.

Why no expert all-to-all: routing is per *task*, and one example has one task, so each row's
whole route is known before the forward and every rank owns every expert. Token-level MoEs
(Switch, GShard) shard experts over ranks and must ship tokens to them; task-level routing
does not. An expert that no row of a rank chose gets no gradient there: DDP is told
(`find_unused_parameters`) and adds a zero for it.

Equal to one process: with rows split unevenly in *real* tokens, the average of per-rank
mean losses is not the global mean. Each rank therefore scales its loss by
world · (its real tokens / global real tokens), so DDP's gradient average equals the gradient
of the global-batch mean loss (tests/test_distributed.py checks the loss curve against
`train.fit` on one process).

Read next: `minimoe/bench.py` (how fast one process is).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel as DDP

from minimoe.batching import Batch
from minimoe.config import Config
from minimoe.device import autocast_context, make_optimizer
from minimoe.interrupt import exit_status, like_ctrl_c, report, watch_parent
from minimoe.model import TaskMoETransformer
from minimoe.train import NonFiniteLoss, lr_factor, param_groups, seq2seq_loss


@dataclass(frozen=True)
class Rank:
    """Where this process stands: rank r of `world` processes, computing on `device`."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(backend: str | None = None) -> Rank:
    """Join the process group that `torchrun` describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Without torchrun: a world of one, no group.
    backend: default NCCL when CUDA is present (one GPU per local rank), else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and backend != "gloo"
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"), rank=rank, world_size=world)
    return Rank(rank, world, device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_rows(n_rows: int, rank: Rank) -> slice:
    """This rank's contiguous block of a batch of n_rows (sizes differ by at most one)."""
    if n_rows < rank.world:
        raise ValueError(f"a batch of {n_rows} rows cannot feed {rank.world} processes; "
                         f"raise --batch_size to at least {rank.world}.")
    return slice(rank.rank * n_rows // rank.world, (rank.rank + 1) * n_rows // rank.world)


def local_loss(model: torch.nn.Module, routed: TaskMoETransformer, batch: Batch, route_gen,
               cfg: Config, rank: Rank, pad_id: int) -> tuple[Tensor, Tensor]:
    """Forward this rank's rows → (loss to backpropagate, its share of the global mean loss).

    Routes are drawn for the *global* batch (one Gumbel sample per task, identical on every
    rank because route_gen is), then sliced, so each row gets the route it would get on one
    process. `model` is the DDP wrapper, `routed` the plain model inside it.
    """
    rows = shard_rows(batch.src.shape[0], rank)
    with autocast_context(rank.device):
        gates = routed.routes(batch.task, route_gen)[rows] if routed.n_routed else None  # [b_r l e]
        logits = model(batch.src[rows], batch.tgt_in[rows], gates=gates, pad_id=pad_id)
    loss = seq2seq_loss(logits, batch.labels[rows], pad_id, cfg.train.label_smoothing)
    n_local = (batch.labels[rows] != pad_id).sum()
    n_global = (batch.labels != pad_id).sum().clamp(min=1)
    fraction = n_local / n_global  # this rank's share of the real tokens (exactly 1.0 on one process)
    # DDP divides the summed gradients by world: × world turns its average into the gradient
    # of the global mean loss. The shares of all ranks sum to that mean (the logged loss).
    return loss * (fraction * rank.world), (loss * fraction).detach()


def ddp_fit(model: TaskMoETransformer, next_batch: Callable[[torch.Generator], Batch], cfg: Config,
            *, steps: int, rank: Rank, tau_fn: Callable[[int], float] | None = None, pad_id: int = 0,
            lrs: tuple[float, float, float] | None = None, seed_offset: int = 0) -> list[tuple[int, float]]:
    """`train.fit`'s optimisation (AdamW, warmup + linear decay, label smoothing, clipping,
    τ schedule, the same seeded generators) under DDP; returns the global loss per step.

    `next_batch(generator)` must give the same global batch on every rank (it does when it
    only uses the generator). Checkpoints, progress bar and Ctrl-C handling stay in `fit`.
    Deviations: none in the maths; world=1 reproduces `fit` step for step.
    """
    tc = cfg.train
    model = model.to(rank.device)
    ddp = model
    if rank.world > 1:
        # A routed model may leave an expert unused on a rank (gate exactly 0): DDP must look
        # for such parameters every step (it warns when a step happens to use them all).
        ddp = DDP(model, device_ids=[rank.device.index] if rank.device.type == "cuda" else None,
                  find_unused_parameters=model.n_routed > 0)
    opt = make_optimizer(param_groups(model, *(lrs or (tc.lr, tc.lr_router, tc.lr_task))), rank.device,
                         tc.weight_decay)
    base_lrs = [group["lr"] for group in opt.param_groups]
    data_gen = torch.Generator().manual_seed(tc.seed * 1000 + seed_offset)  # as train.fit
    route_gen = torch.Generator().manual_seed(tc.seed * 1000 + seed_offset + 1)
    history = []
    model.train()
    for step in range(steps):
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = base * lr_factor(step, steps, tc.warmup_frac)
        if tau_fn is not None:
            model.tau = tau_fn(step)
        loss, share = local_loss(ddp, model, next_batch(data_gen), route_gen, cfg, rank, pad_id)
        if rank.world > 1:
            dist.all_reduce(share)  # the global batch's mean loss, the same on every rank
        if not torch.isfinite(share):  # every rank stops at the same step, nothing applied
            raise NonFiniteLoss(f"non-finite loss ({float(share)}) at step {step}; the step was not "
                                "applied. Lower --lr or --lr_router, or raise --tau_min.")
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages gradients across ranks during this call
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        history.append((step, float(share)))
    return history


def main(argv: list[str] | None = None) -> int:
    """Upstream multi-task training of one method on the synthetic suite, one process per rank.
    Starts from a fresh model (no denoising pre-training); rank 0 prints the loss curve."""
    from minimoe.crossfit_suite import load_suite
    from minimoe.presets import apply_overrides
    from minimoe.pipeline import build_routed, make_context, method_config, upstream_data
    from minimoe.router import stage_taus
    from minimoe.runner import build_parser, config_from_args

    args = build_parser("torchrun -m minimoe.distributed", main.__doc__.splitlines()[0]).parse_args(argv)
    rank = setup()
    # torchrun passes Ctrl-C and SIGTERM on to every rank: each abandons its step (ddp_fit keeps
    # no checkpoint) and exits 130 or 143, rank 0 with the one line of `minimoe train`. A rank
    # whose launcher was killed outright stops the same way instead of training on alone.
    if rank.world > 1:
        watch_parent(os.getppid())
    try:
        with like_ctrl_c():
            cfg = method_config(config_from_args(args), args.method)
            cfg = apply_overrides(cfg, {"device": str(rank.device)})
            ctx = make_context(cfg, load_suite(cfg.data), quiet=True)
            torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank (DDP checks)
            dense_cfg = method_config(cfg, "dense")
            dense = TaskMoETransformer(ctx.model_config(dense_cfg), dense_cfg.router, 1).to(rank.device)
            model = build_routed(ctx, cfg, dense, seed=cfg.train.seed)
            data, bs, rc = upstream_data(ctx, cfg), cfg.train.batch_size, cfg.router
            start = time.perf_counter()
            history = ddp_fit(model, lambda g: data.sample(bs, g), cfg, steps=cfg.train.steps, rank=rank,
                              tau_fn=stage_taus(rc.tau0, rc.tau_min, cfg.train.steps, rc.tau_decay),
                              pad_id=ctx.tokenizer.pad_id)
            if rank.is_main:
                every = max(1, len(history) // 20)
                for step, loss in history:
                    if step % every == 0 or step == len(history) - 1:
                        print(f"step {step:5d}  loss {loss:.4f}")
                seconds = time.perf_counter() - start
                print(f"method {args.method}, {rank.world} process(es), global batch {bs}: "
                      f"{len(history) / seconds:.1f} steps/s ({seconds:.1f} s)")
    except KeyboardInterrupt as err:
        if not rank.is_main:
            return exit_status()
        return report(err, "distributed training keeps no checkpoint; run the same command again to start over")
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
