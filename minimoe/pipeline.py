"""The protocol, stage by stage: pre-train → upstream → few-shot / zero-shot.

Every method is one set of config overrides (`METHODS`) on the same code path, trained with
the same budget from the same pre-trained dense base:

    dense      the multi-task baseline (n_experts = 1)
    average    upcycled experts, uniform soft routing (the paper's stable baseline)
    random     upcycled experts, a fixed random expert per (task, layer)
    oracle     upcycled experts, expert g for every task of interference group g (the positive
               control of `minimoe/interference.py`: the routes a router should find)
    learned    upcycled experts, a learned router (single stage)
    two_stage  learned routes (stage 1), then experts re-initialised from the base, router
               frozen, softmax with τ annealed from `stage2_tau0` down to 1 (stage 2); the two
               stages share the same `steps` budget (`stage_steps`)
    token      upcycled FFN experts, top-k per *token* from its hidden state
               (`minimoe/token_router.py`; not the paper: the comparison of lesson 09)

Each stage checkpoints into the run directory, so an interrupted run resumes where it stopped.
At every upstream checkpoint the routes are saved (route dynamics) and, with
`Context.track_held_out`, the loss on held-out examples of the seen tasks (the eval curve):
`minimoe/snapshots.py`.
Read next: `minimoe/evaluate.py` (scoring, routes for unseen tasks, few-shot fine-tuning).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minimoe.batching import TaskData
from minimoe.config import Config, RouterConfig
from minimoe.device import resolve_device, set_threads
from minimoe.errors import ConfigError, nearest
from minimoe.fisher import fisher_task_vectors
from minimoe.interference import oracle_routes, router_text
from minimoe.model import TaskMoETransformer
from minimoe.presets import apply_overrides
from minimoe.router import stage_taus
from minimoe.snapshots import checkpoint_hook
from minimoe.train import FitState, fit
from minimoe.upcycle import upcycle

METHODS: dict[str, dict] = {
    "dense": {"n_experts": 1, "routing": "dense", "two_stage": False, "router_kind": "task"},
    "average": {"routing": "average", "two_stage": False},
    "random": {"routing": "random", "two_stage": False},
    "oracle": {"routing": "oracle", "two_stage": False},
    "learned": {"routing": "learned", "two_stage": False},
    "two_stage": {"routing": "learned", "two_stage": True},
    "token": {"routing": "learned", "router_kind": "token", "expert_kind": "ffn", "two_stage": False},
}
MASK_PROB = 0.3  # share of corpus words masked in denoising pre-training


def method_config(cfg: Config, method: str) -> Config:
    """cfg with the overrides that define `method` (see METHODS)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}'{nearest(method, METHODS)}")
    return apply_overrides(cfg, METHODS[method])


@dataclass
class Context:
    """What every stage needs: config, suite, device, run directory, task → id table."""

    cfg: Config
    suite: object
    device: torch.device
    run_dir: Path
    quiet: bool = False
    task_index: dict[str, int] = field(default_factory=dict)
    pretrain_path: Path | None = None  # default run_dir/pretrain.pt; shared by reproduce's cells
    histories: dict[str, list] = field(default_factory=dict)
    track_held_out: bool = False  # record the held-out loss at every upstream checkpoint (a run's eval curve)

    @property
    def tokenizer(self):
        return self.suite.tokenizer

    def model_config(self, cfg: Config | None = None):
        return dataclasses.replace((cfg or self.cfg).model, vocab_size=self.tokenizer.vocab_size)


def make_context(cfg: Config, suite, run_dir: str | Path | None = None, quiet: bool = False) -> Context:
    run_dir = Path(run_dir or cfg.train.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.train.threads)
    index = {t.name: i for i, t in enumerate(suite.tasks)}
    return Context(cfg, suite, resolve_device(cfg.train.device), run_dir, quiet, index)


def _offset(name: str) -> int:
    """A stable per-stage seed offset (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode()) % 100_000


# ------------------------------------------------------------------ pre-training
def pretrain(ctx: Context) -> TaskMoETransformer:
    """Denoising pre-training of the dense base on the corpus (the analogue of BART-base).

    The router section is reset to its defaults: the dense base does not depend on it, so every
    method (whatever its router) can share one pre-trained checkpoint.
    """
    cfg = method_config(ctx.cfg, "dense")
    cfg = dataclasses.replace(cfg, router=RouterConfig(routing="dense"))
    corpus = ctx.suite.corpus()
    data = TaskData(ctx.tokenizer, corpus, corpus, [0] * len(corpus), cfg.model.max_len, ctx.device)
    torch.manual_seed(cfg.train.seed)
    model = TaskMoETransformer(ctx.model_config(cfg), cfg.router, n_tasks=1).to(ctx.device)
    bs = cfg.train.batch_size
    state = fit(model, lambda g: data.sample_denoising(bs, g, MASK_PROB), cfg,
                steps=cfg.train.pretrain_steps, device=ctx.device, desc="pre-train",
                ckpt_path=ctx.pretrain_path or ctx.run_dir / "pretrain.pt", seed_offset=_offset("pretrain"),
                quiet=ctx.quiet)
    ctx.histories["pretrain"] = state.history
    return model


# ------------------------------------------------------------------ upstream
def upstream_data(ctx: Context, cfg: Config) -> TaskData:
    """All seen tasks' upstream examples in one mixed-task dataset."""
    sources, targets, ids = [], [], []
    for task in ctx.suite.seen_tasks():
        for ex in ctx.suite.upstream(task.name):
            sources.append(ctx.suite.source_text(task, ex))
            targets.append(ex.outputs[0])
            ids.append(ctx.task_index[task.name])
    return TaskData(ctx.tokenizer, sources, targets, ids, cfg.model.max_len, ctx.device)


def task_text_vectors(ctx: Context, model: TaskMoETransformer, repr_kind: str) -> torch.Tensor:
    """Fixed text representations of every task → [n d] (instruction or examples)."""
    tok, vecs = ctx.tokenizer, []
    for task in ctx.suite.tasks:
        if repr_kind == "instruction":
            texts = [router_text(task)]  # the instruction (with its group tag, if any)
        else:  # examples: the paper's TextEmb over the task's (few-shot) training examples
            examples = ctx.suite.router_examples(task.name)
            texts = [f"{ctx.suite.source_text(task, ex)} {ex.outputs[0]}" for ex in examples]
        data = TaskData(tok, texts, texts, [0] * len(texts), model.cfg.max_len, ctx.device)
        vecs.append(model.text_representation(data.src, tok.pad_id).mean(0))
    vecs = torch.stack(vecs)  # [n d]
    # Mean-pooled states of similar texts are nearly parallel: standardise every dimension with
    # the seen tasks' statistics, so the router sees how tasks *differ* (unseen tasks reuse them).
    seen = torch.tensor([t.seen for t in ctx.suite.tasks], device=vecs.device)
    mu, sigma = vecs[seen].mean(0), vecs[seen].std(0) + 1e-6
    return (vecs - mu) / sigma  # [n d]


def build_routed(ctx: Context, cfg: Config, dense: TaskMoETransformer, seed: int,
                 task_vectors: bool = True) -> TaskMoETransformer:
    """The method's model at the start of upstream training, upcycled from the dense base.
    task_vectors=False skips computing the router's text or Fisher task vectors (stage two
    copies stage one's instead)."""
    n_tasks = len(ctx.suite.tasks)
    mcfg = ctx.model_config(cfg)
    if mcfg.n_experts == 1:
        model = TaskMoETransformer(mcfg, cfg.router, n_tasks).to(ctx.device)
        # Everything but the per-task routing buffers (sized by the number of tasks).
        weights = {k: v for k, v in dense.state_dict().items() if k not in ("fixed_routes", "task_vectors")}
        model.load_state_dict(weights, strict=False)
        return model
    model = upcycle(dense, mcfg, cfg.router, n_tasks, noise_std=mcfg.upcycle_noise, seed=seed)
    if cfg.router.routing == "oracle":  # fixed by the ground-truth groups
        model.fixed_routes.copy_(oracle_routes(ctx.suite.tasks, model.n_routed, mcfg.n_experts))
    task_routed = task_vectors and cfg.router.routing == "learned" and cfg.router.router_kind == "task"
    if task_routed and cfg.router.task_repr == "fisher":  # from the dense base: minimoe/fisher.py
        model.set_task_vectors(fisher_task_vectors(ctx, dense, cfg.router.d_task))
    elif task_routed and cfg.router.task_repr != "learned":
        model.set_task_vectors(task_text_vectors(ctx, model, cfg.router.task_repr))
    return model


def stage_steps(cfg: Config) -> tuple[int, int]:
    """Upstream steps of (stage 1, stage 2): every method gets `steps` in all, so
    two-stage training splits them, `stage1_frac` for stage 1 (paper: 30k + 60k → 1/3).
    two_stage_budget="each" gives each stage `steps` (2× the other methods: the comparison of
    lesson 07). A single-stage method returns (steps, 0)."""
    steps = cfg.train.steps
    if not cfg.router.two_stage:
        return steps, 0
    if cfg.router.two_stage_budget == "each":
        return steps, steps
    if steps < 2:
        raise ConfigError(f"two-stage training needs steps >= 2 (one per stage); got steps={steps}.")
    first = min(steps - 1, max(1, round(steps * cfg.router.stage1_frac)))
    return first, steps - first


def train_upstream(ctx: Context, method: str, dense: TaskMoETransformer) -> TaskMoETransformer:
    """Upstream multi-task training of one method; returns the trained model."""
    cfg = method_config(ctx.cfg, method)
    data = upstream_data(ctx, cfg)
    bs, rc = cfg.train.batch_size, cfg.router
    model = build_routed(ctx, cfg, dense, seed=cfg.train.seed)
    steps, _ = stage_steps(cfg)
    state = fit(model, lambda g: data.sample(bs, g), cfg, steps=steps, device=ctx.device,
                desc=f"{method}" + (" stage 1" if rc.two_stage else ""),
                ckpt_path=ctx.run_dir / f"{method}.pt", seed_offset=_offset(method),
                tau_fn=stage_taus(rc.tau0, rc.tau_min, steps, rc.tau_decay),
                quiet=ctx.quiet, on_checkpoint=checkpoint_hook(ctx, cfg, model, method, routes=True))
    ctx.histories[method] = state.history
    if rc.two_stage:
        model = stage_two(ctx, cfg, model, dense, data)
    model.eval()
    return model


def stage_two(ctx: Context, cfg: Config, stage1: TaskMoETransformer, dense: TaskMoETransformer,
              data: TaskData) -> TaskMoETransformer:
    """Paper's stage 2: fresh experts from the base, frozen router, softmax τ: stage2_tau0 → stage2_tau_end.

    The paper ends at τ = 1 (the default). Stage 1 learned its logits at its own final τ
    (tau_min), so how sharp the routes are at τ = 1 depends on their scale; stage2_tau_end =
    tau_min keeps stage 1's sharpness (lessons/results/tau_end/ compares the two)."""
    cfg2 = apply_overrides(cfg, {"selection": "softmax"})
    model = build_routed(ctx, cfg2, dense, seed=cfg.train.seed + 1, task_vectors=False)  # stage 1's below
    # Keep what stage 1 learned about tasks: router and task vectors, frozen.
    keep = {k: v for k, v in stage1.state_dict().items() if k.startswith(("router.", "task_emb.", "task_vectors"))}
    model.load_state_dict(keep, strict=False)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(("router.", "task_emb.")))
    (_, steps), tau0, tau_end = stage_steps(cfg), cfg.router.stage2_tau0, cfg.router.stage2_tau_end
    # The same exponential schedule as stage 1, from tau0 down to exactly tau_end at the last step.
    tau_fn = stage_taus(tau0, tau_end, max(1, steps - 1), reach=1.0)
    bs = cfg.train.batch_size
    state: FitState = fit(model, lambda g: data.sample(bs, g), cfg2, steps=steps, device=ctx.device,
                          desc="two_stage stage 2", ckpt_path=ctx.run_dir / "two_stage_stage2.pt",
                          seed_offset=_offset("stage2"), tau_fn=tau_fn, quiet=ctx.quiet,
                          on_checkpoint=checkpoint_hook(ctx, cfg2, model, "two_stage stage 2", routes=False))
    model.tau = tau_end
    ctx.histories["two_stage stage 2"] = state.history
    return model
