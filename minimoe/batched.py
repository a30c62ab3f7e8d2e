"""Many few-shot fine-tunes at once: N copies of one upstream model, trained and scored together.

A study fine-tunes the same upstream model once per (unseen task, data seed, lr): each copy has
its own route, data, RNG and lr, but every copy has the same shapes. So instead of N small
fits, one fit of N *stacked* copies: every trainable parameter gets a leading copy axis [c ...],
`torch.func.functional_call` runs the model on one copy's parameters, and `torch.func.vmap` runs
it on all copies in one call (each matmul becomes a batched matmul: far fewer, larger kernels).

What each copy sees is exactly what `minimoe/evaluate.py::few_shot` gives its unbatched fit:
- its batches are drawn by `TaskData.sample` from a generator seeded as `train.fit` seeds it;
  the copies' batches are padded to one shape (pad rows and columns: masked in attention and
  ignored by the loss, which is each copy's own mean over its own real target tokens);
- its gradient is the gradient of its own loss (the copies share no parameter that learns; the
  router and task embeddings stay frozen, as in few_shot);
- clipping by its own global norm (a factor per copy), then torch's AdamW on the stacked tensors:
  AdamW is elementwise, so each copy gets its own update (copies trained together share an lr;
  a grid of lrs trains one group per lr), with `train.py::lr_factor`'s schedule;
- greedy decoding with every step vmapped, each row's output cut to the length its unbatched
  `evaluate.predict` call allows.
The unbatched path stays the oracle (tests/test_batched.py): equal losses, parameters, predictions
and scores within float tolerance. Two changes make the model vmappable and leave its function
alone: every expert pool runs as `Mixture` (all experts, weighted sum: the pool's own sum), or,
when every copy's route is one-hot, as `Chosen` (each copy's chosen expert alone, its weights
gathered by index: the compute of the one expert the unbatched fit runs), and attention takes the
explicit einops path (PyTorch's fused CPU attention has no vmap rule). Shapes: c copies, then the
legend of `minimoe/__init__.py`.

Read next: `minimoe/reproduce.py::run_cell` (`fs_batched`), `lessons/09_efficiency.md`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import reduce

import torch
from einops import repeat
from torch import Tensor, nn
from torch.func import functional_call, vmap

from minimoe.device import autocast_context, make_optimizer
from minimoe.evaluate import few_shot, task_data
from minimoe.experts import scale_rows
from minimoe.layers import MultiHeadAttention
from minimoe.metrics import score
from minimoe.model import TaskMoETransformer
from minimoe.phases import phase
from minimoe.train import PAD_ID, NonFiniteLoss, lr_factor, seq2seq_loss

CHUNK = 64  # copies trained at once: ~4 × parameters each (weights, grad, 2 AdamW moments)
FROZEN = ("router.", "task_emb.")  # few_shot fixes the route: these never learn


@dataclass
class Job:
    """One few-shot fine-tune: an unseen task, its data seed, one lr, its fixed route [l e]."""

    task: object
    seed: int
    lr: float
    gates: Tensor | None
    dev: float | None = None  # scores, once `few_shot_many` has them (no dev for a one-lr grid)
    test: float = -1.0


class Mixture(nn.Module):
    """An expert pool as a plain weighted sum: y = Σ_e gates[:, e] · f_e(x), every expert on every
    row. No data-dependent branch (vmappable). x [b ...], gates [b e] → [b ...]."""

    def __init__(self, experts: nn.ModuleList):
        super().__init__()
        self.experts = experts

    def forward(self, x: Tensor, gates: Tensor, run_all: bool = False, **ctx) -> Tensor:
        y = None
        for e, expert in enumerate(self.experts):  # in expert order, as experts.combine adds them
            part = scale_rows(gates[:, e], expert(x, **ctx))
            y = part if y is None else y + part
        return y


class Chosen(nn.Module):
    """An expert pool under a one-hot task-level route: only the chosen expert runs. Its weights
    are gathered from the experts' stacked weights at the gate's argmax (an index, not a branch:
    vmappable), so each copy runs its own expert. Equals Mixture (1 · f_chosen plus exact zeros)
    at 1/m of its compute; the other experts get exact zero gradients, as there.
    x [b ...], gates [b e] one-hot, the same in every row → [b ...]."""

    def __init__(self, experts: nn.ModuleList):
        super().__init__()
        self.experts = experts
        self.names = [n for n, _ in experts[0].named_parameters()]  # every expert has these

    def forward(self, x: Tensor, gates: Tensor, run_all: bool = False, **ctx) -> Tensor:
        chosen = gates[0].argmax()  # [] : a task-level route gives every row the same gates
        # getattr, not named_parameters(): under functional_call the weights are substituted tensors
        weights = {n: torch.stack([reduce(getattr, n.split("."), e) for e in self.experts])[chosen]
                   for n in self.names}
        return functional_call(self.experts[0], weights, (x,), ctx)


def one_hot(gates: Tensor | None) -> bool:
    """Are all these routes [... e] one-hot (every gate 0 or 1, one 1 per row)?"""
    return gates is not None and bool((((gates == 0) | (gates == 1)).all() & (gates.sum(-1) == 1).all()).item())


def batchable(model: TaskMoETransformer, cfg) -> bool:
    """Can few-shot fine-tuning of this model run batched, with the unbatched results? Task-level
    (or no) routing, no dropout, no weight decay: token routing picks experts inside the forward,
    dropout would draw other masks, and weight decay would shrink the experts a one-hot route
    leaves out (the unbatched fit gives them no gradient, so AdamW skips them)."""
    return not model.ffn_routed and cfg.model.dropout == 0.0 and cfg.train.weight_decay == 0.0


def vmappable(model: TaskMoETransformer, chosen: bool = False) -> TaskMoETransformer:
    """A copy of `model` that computes the same function under vmap (module docstring); with
    `chosen`, for one-hot routes only: each pool runs its chosen expert alone (`Chosen`)."""
    twin = copy.deepcopy(model)
    for pos in [*twin.encoder, *twin.decoder]:
        if pos.pool is not None:
            pos.pool = (Chosen if chosen else Mixture)(pos.pool.experts)
    for module in twin.modules():
        if isinstance(module, MultiHeadAttention):
            module.fused = "off"
    return twin


def stack_padded(rows: list[Tensor], pad: int) -> Tensor:
    """Copies' 2-D tensors of different shapes [b_i x_i] → [c max(b) max(x)], padded with `pad`."""
    b, x = max(r.shape[0] for r in rows), max(r.shape[1] for r in rows)
    out = rows[0].new_full((len(rows), b, x), pad)
    for i, r in enumerate(rows):
        out[i, : r.shape[0], : r.shape[1]] = r
    return out


def fine_tune(model: TaskMoETransformer, ctx, jobs: list[Job]) -> tuple[dict[str, Tensor], list[list[float]]]:
    """Fine-tune one copy of `model` per job, all at once → (trainable parameters stacked [c ...],
    each copy's loss per step). The same steps, batches, schedule and clipping as few_shot's fit;
    the jobs share one lr (`few_shot_many` groups them so)."""
    if len({job.lr for job in jobs}) != 1:
        raise ValueError(f"fine_tune trains copies of one lr together; got lrs {sorted({j.lr for j in jobs})}.")
    gates = _stacked_gates(jobs, ctx.device)
    tc, twin = ctx.cfg.train, vmappable(model, chosen=one_hot(gates))
    frozen = {n: p.detach() for n, p in twin.named_parameters() if n.startswith(FROZEN)}
    params = {n: repeat(p.detach(), "... -> c ...", c=len(jobs)).clone().requires_grad_()
              for n, p in twin.named_parameters() if n not in frozen}
    # torch's AdamW on the stacked tensors: elementwise, so each copy's update is its own.
    opt = make_optimizer([{"params": list(params.values()), "lr": jobs[0].lr}], ctx.device, tc.weight_decay)
    data = [task_data(ctx, job.task, ctx.suite.few_shot(job.task.name, job.seed)["train"]) for job in jobs]
    gens = [torch.Generator().manual_seed(tc.seed * 1000 + job.seed) for job in jobs]  # as fit seeds them

    def loss_of(p, src, tgt_in, labels, g):  # one copy: p [...], src [b s], g [l e] → loss []
        route = None if g is None else repeat(g, "l e -> b l e", b=src.shape[0])
        with autocast_context(ctx.device):  # as train._step: bf16 on CUDA
            logits = functional_call(twin, (p, frozen), (src, tgt_in), {"gates": route, "pad_id": PAD_ID})
        return seq2seq_loss(logits, labels, PAD_ID, tc.label_smoothing)

    history: list[list[float]] = [[] for _ in jobs]
    twin.train()
    for step in range(tc.fs_steps):
        opt.param_groups[0]["lr"] = jobs[0].lr * lr_factor(step, tc.fs_steps, tc.warmup_frac)
        batches = [d.sample(min(tc.fs_batch_size, len(d)), g) for d, g in zip(data, gens)]
        src, tgt_in, labels = (stack_padded([getattr(b, k) for b in batches], PAD_ID)
                               for k in ("src", "tgt_in", "labels"))
        losses = vmap(loss_of, in_dims=(0, 0, 0, 0, None if gates is None else 0))(params, src, tgt_in,
                                                                                   labels, gates)  # [c]
        if not bool(torch.isfinite(losses).all()):
            bad = jobs[int((~torch.isfinite(losses)).nonzero()[0])]
            raise NonFiniteLoss(f"non-finite loss at few-shot {bad.task.name} (data seed {bad.seed}, lr "
                                f"{bad.lr}) step {step}; the step was not applied. Lower --fs_lrs.")
        grads = torch.autograd.grad(losses.sum(), list(params.values()))  # copy i's loss moves copy i only
        for p, g in zip(params.values(), _clip(list(grads), tc.grad_clip)):
            p.grad = g.contiguous()  # autograd may hand back permuted strides; the fused kernel reads flat memory
        opt.step()
        for i, loss in enumerate(losses.tolist()):
            history[i].append(loss)
    return {n: p.detach() for n, p in params.items()}, history


def _stacked_gates(jobs: list[Job], device) -> Tensor | None:
    """The copies' routes [c l e] (None for a dense model)."""
    return None if jobs[0].gates is None else torch.stack([job.gates for job in jobs]).to(device)


def _clip(grads: list[Tensor], max_norm: float) -> list[Tensor]:
    """clip_grad_norm_ per copy: each copy's grads [c ...] scaled by min(1, max_norm / its global norm)."""
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # [c]
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return [scale_rows(factor, g) for g in grads]


class Calls(nn.Module):
    """`Calls(model)(name, *args)` = `model.name(*args)`: lets `functional_call` (which calls
    forward) run the model's `encode` and `decode` on substituted parameters ("model.<name>")."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, method: str, *args):
        return getattr(self.model, method)(*args)


@torch.no_grad()
def predict_stacked(model: TaskMoETransformer, ctx, params: dict[str, Tensor], jobs: list[Job],
                    examples: list[list]) -> list[list[str]]:
    """Greedy predictions of copy i (parameters params[...][i], route jobs[i].gates) on examples[i]
    → texts per copy, as `evaluate.predict` gives them. Encoding and every decoding step run all
    copies in one vmapped call; the loop stops when every row has its EOS or its length."""
    gates = _stacked_gates(jobs, ctx.device)
    tok, caller = ctx.tokenizer, Calls(vmappable(model, chosen=one_hot(gates)).eval())
    weights = ({f"model.{n}": p for n, p in params.items()},
               {f"model.{n}": p for n, p in caller.model.named_parameters() if n not in params})
    src = stack_padded([task_data(ctx, job.task, ex).src for job, ex in zip(jobs, examples)], tok.pad_id)
    src_pad = src != tok.pad_id  # [c b s]
    # evaluate.predict's max_new per call, capped as model.generate caps it
    keep = torch.tensor([min(2 + max(len(tok.encode(o)) for e in ex for o in e.outputs), model.cfg.max_len - 1)
                         for ex in examples], device=src.device)  # [c]
    dims = ((0, None), 0, 0, None if gates is None else 0)

    def run(method: str, extra: tuple = ()):  # one copy's model.method(*tensors, gates [b l e])
        def one(p, x, *rest):
            *rest, g = rest
            route = None if g is None else repeat(g, "l e -> b l e", b=x.shape[0])
            return functional_call(caller, p, (method, x, *rest, route))
        return one

    memory = vmap(run("encode"), in_dims=dims)(weights, src, src_pad, gates)  # [c b s d]
    out = src.new_full((*src.shape[:2], 1), tok.bos_id)  # [c b 1]
    rows = torch.arange(src.shape[1], device=src.device)
    done = rows[None, :] >= torch.tensor([len(ex) for ex in examples], device=src.device)[:, None]  # pad rows
    for step in range(int(keep.max())):
        logits = vmap(run("decode"), in_dims=((0, None), 0, 0, 0, dims[-1]))(weights, out, memory, src_pad, gates)
        next_tok = torch.where(done, tok.pad_id, logits[:, :, -1].argmax(-1))  # [c b]
        out = torch.cat([out, next_tok[..., None]], dim=-1)
        done = done | (next_tok == tok.eos_id) | (step + 1 >= keep[:, None])
        if bool(done.all()):
            break
    return [[tok.decode(row[1:k + 1].tolist()) for row in out[i, : len(ex)]]
            for i, (ex, k) in enumerate(zip(examples, keep.tolist()))]


def few_shot_many(model: TaskMoETransformer, ctx, items: list[tuple[object, int, Tensor | None]]) -> list[dict]:
    """`evaluate.few_shot` for many (task, data seed, route) items at once → one dict per item,
    {"dev", "lr", "test"}: the lr of the grid best on dev (the first of equals), its test score
    (dev None for a one-lr grid, as few_shot gives it).

    Copies are trained in chunks of at most CHUNK, tasks of similar source length together (the
    padding of a step is then small), and scored one task at a time (its copies decode alike)."""
    grid = ctx.cfg.train.fs_lr_grid
    jobs = [Job(task, seed, lr, gates) for task, seed, gates in items for lr in grid]
    width = {job.task.name: task_data(ctx, job.task, ctx.suite.few_shot(job.task.name, job.seed)["train"]).src.shape[1]
             for job in jobs}  # source tokens, padded
    for part in _chunks(sorted(jobs, key=lambda job: (job.lr, width[job.task.name]))):
        with phase("few_shot_tune"):
            params = fine_tune(model, ctx, part)[0]
        with phase("few_shot_eval"):
            for task in dict.fromkeys(job.task.name for job in part):
                idx = [i for i, job in enumerate(part) if job.task.name == task]
                _score(model, ctx, {n: p[idx] for n, p in params.items()}, [part[i] for i in idx],
                       ("dev", "test") if len(grid) > 1 else ("test",))  # as few_shot: one lr, no dev
    best: list[dict] = []
    for i in range(len(items)):
        tried = jobs[i * len(grid):(i + 1) * len(grid)]
        top = max(tried, key=lambda job: (job.dev or 0.0, -tried.index(job)))
        best.append({"dev": top.dev, "lr": top.lr, "test": top.test})
    return best


def few_shot_all(model: TaskMoETransformer, ctx, items: list[tuple[object, int, Tensor | None]]) -> list[dict]:
    """`evaluate.few_shot` of every (task, data seed, route) item: all at once (`few_shot_many`)
    when the config asks for it (`fs_batched`) and the model allows it (`batchable`), else one by
    one. Either way the same dicts, in the order of `items`."""
    if ctx.cfg.train.fs_batched and batchable(model, ctx.cfg):
        return few_shot_many(model, ctx, items)
    return [few_shot(model, ctx, task, seed, gates) for task, seed, gates in items]


def _chunks(jobs: list[Job]) -> list[list[Job]]:
    """Jobs of one lr in near-equal chunks of at most CHUNK copies (one lr: one AdamW)."""
    out = []
    for lr in dict.fromkeys(job.lr for job in jobs):
        same = [job for job in jobs if job.lr == lr]
        n = math.ceil(len(same) / CHUNK)
        out += [same[c * len(same) // n:(c + 1) * len(same) // n] for c in range(n)]
    return out


def _score(model, ctx, params: dict[str, Tensor], jobs: list[Job], names: tuple[str, ...]) -> None:
    """Each job's score on the splits `names` (its task's metric), from its copy in params [c ...]."""
    splits = [ctx.suite.few_shot(job.task.name, job.seed) for job in jobs]
    for name in names:
        preds = predict_stacked(model, ctx, params, jobs, [s[name] for s in splits])
        for job, split, p in zip(jobs, splits, preds):
            setattr(job, name, score(job.task.metric, p, [ex.outputs for ex in split[name]], job.task.labels))
