"""Fisher-information task vectors: a task described by which parameters its loss is sensitive to.

The paper's routers also read a third kind of task representation (Ye, Zha & Ren 2022, §3): the
diagonal of the Fisher information of a small set of parameters on the task's examples, reduced
by PCA. `task_repr=fisher` builds it from the *pre-trained dense model* (the base every method
starts from, before any routing):

    F_task[p]   = mean over the task's examples x of (∂ loss(x) / ∂θ_p)²      (empirical Fisher)
    z_task      = (F_task − μ) / σ                       μ, σ: per parameter, over the seen tasks
    vector_task = z_task · V / c          V [p d_task]: PCA of the seen tasks' z; c: one scale

`fisher_diagonal` takes the per-example gradients with `torch.func` — `vmap(grad(loss))` over
the examples, the model run by `functional_call` with the chosen parameters as inputs — so
every example gets its own gradient in one batched pass, not a Python loop. `FisherPCA` is
fitted on the seen tasks only; an unseen task is projected with it from the Fisher diagonal of
its few-shot *training* examples. The loss needs labels, so this is a few-shot representation:
an unseen task has no Fisher vector, hence no route, before it has labelled examples
(`evaluate.zero_shot` refuses a Fisher-routed model; reproduce's `fisher` cell scores few-shot only).

Which parameters: the gains and biases of every LayerNorm (`fisher_parameter_names`: 2·d per
norm, ~450 numbers at the tiny preset). Why: like the paper's adapters they sit in every layer
of encoder and decoder, they are few (cheap per-example gradients, a small PCA input), and each
scales one feature entering one sub-block, so a gain's gradient says how much the task's loss
depends on that feature there. Deviations: the paper takes the Fisher of adapters and reduces it
to 128 dimensions; we take the base model's LayerNorms (minimoe has no adapters) and reduce to
`d_task` (there are only ~30 seen tasks: at most n_seen − 1 components carry information, the
rest are zeros); the loss is the unsmoothed cross-entropy per target token, averaged per example.
Read next: `minimoe/evaluate.py::unseen_route`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from minimoe.batching import TaskData
from minimoe.errors import ConfigError
from minimoe.evaluate import task_data
from minimoe.layers import MultiHeadAttention
from minimoe.suite import FEW_SHOT_SEEDS
from minimoe.train import seq2seq_loss


def fisher_parameter_names(model: nn.Module) -> list[str]:
    """The parameters whose Fisher diagonal describes a task: every LayerNorm's weight and bias."""
    return [f"{name}.{p}" for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)
            for p, _ in module.named_parameters(recurse=False)]


def fisher_diagonal(model: nn.Module, data: TaskData, names: list[str] | None = None,
                    chunk_size: int = 64) -> Tensor:
    """Empirical Fisher diagonal: the mean over examples of squared per-example gradients → [p].

    model: a dense `TaskMoETransformer` (no routes needed); data: the task's examples, one
    (source, target) per row; names: the parameters (default `fisher_parameter_names`), whose
    flattened gradients are concatenated in this order. The model is not changed.
    """
    names = fisher_parameter_names(model) if names is None else names
    # A copy in eval mode (no dropout) with the explicit attention: the fused SDPA op has no vmap
    # batching rule on CPU, and vmap's fallback would run it once per example.
    probe = copy.deepcopy(model).eval()
    for module in probe.modules():
        if isinstance(module, MultiHeadAttention):
            module.fused = "off"
    params = dict(probe.named_parameters())
    chosen = {k: params[k].detach() for k in names}
    fixed = {k: v.detach() for k, v in {**params, **dict(probe.named_buffers())}.items() if k not in chosen}
    pad = data.pad_id

    def loss(theta: dict[str, Tensor], src: Tensor, tgt: Tensor) -> Tensor:
        """One example's loss as a function of the chosen parameters: src [s], tgt [t]."""
        logits = functional_call(probe, (theta, fixed), (src[None], tgt[None, :-1]), {"pad_id": pad})
        return seq2seq_loss(logits, tgt[None, 1:], pad, smoothing=0.0)

    grads = vmap(grad(loss), in_dims=(None, 0, 0), chunk_size=chunk_size)(chosen, data.src, data.tgt)
    per_example = torch.cat([grads[k].flatten(1) for k in names], dim=1)  # [b p]
    return per_example.pow(2).mean(0)


@dataclass
class FisherPCA:
    """Standardise with the seen tasks' statistics, then project on their principal axes.

    mean, std [p]: per parameter, over the seen tasks; components [p k], k = min(d_task,
    n_seen − 1, p); scale: one number, chosen so that the seen vectors' mean squared norm is
    d_task (the unit-scale coordinates `TaskRouter`'s init assumes). One scale for all axes
    keeps PCA's geometry: whitening would blow the noisy last axes up to the size of the first.
    """

    mean: Tensor
    std: Tensor
    components: Tensor
    scale: float
    d_task: int

    @classmethod
    def fit(cls, seen: Tensor, d_task: int) -> "FisherPCA":
        """Fit on the seen tasks' Fisher diagonals only: seen [n p] (float64 inside)."""
        if seen.shape[0] < 2:
            raise ConfigError(f"task_repr='fisher' standardises and fits its PCA on the seen tasks, and needs "
                              f"at least 2 (got {seen.shape[0]}); use --task_repr=learned or add seen tasks.")
        x = seen.double().cpu()
        mean, std = x.mean(0), x.std(0)
        # A parameter no seen task moves has std 0: divide by a floor, not by 0.
        std = std.clamp_min(float(std.max()) * 1e-6 or 1.0)
        z = (x - mean) / std  # [n p], every column centred
        k = min(d_task, x.shape[0] - 1, x.shape[1])
        _, _, vh = torch.linalg.svd(z, full_matrices=False)
        components = vh[:k].T  # [p k]
        # An axis's sign is arbitrary: make each axis's largest loading positive, so the
        # vectors do not flip between two libraries' SVDs.
        largest = components.abs().argmax(0)
        components = components * components[largest, torch.arange(k)].sign()
        scores = z @ components  # [n k]
        scale = float(scores.pow(2).sum(1).mean().div(d_task).sqrt()) or 1.0
        return cls(mean, std, components, scale, d_task)

    def project(self, fisher: Tensor) -> Tensor:
        """Fisher diagonals [m p] → task vectors [m d_task] (axes beyond k are zero), float32."""
        z = (fisher.double().cpu() - self.mean) / self.std
        scores = z @ self.components / self.scale  # [m k]
        pad = torch.zeros(scores.shape[0], self.d_task - scores.shape[1], dtype=scores.dtype)
        return torch.cat([scores, pad], dim=1).float()


def task_fisher(ctx, model: nn.Module, task, examples) -> Tensor:
    """The Fisher diagonal [p] of the model on a task's labelled examples (source → outputs[0])."""
    return fisher_diagonal(model, task_data(ctx, task, examples, model.cfg.max_len))


def fisher_task_vectors(ctx, dense: nn.Module, d_task: int, few_shot_seed: int = FEW_SHOT_SEEDS[0]) -> Tensor:
    """Fisher task vectors of every task of ctx.suite → [n d_task], on the dense model's device.

    Seen tasks: their first upstream examples; unseen tasks: the few-shot train split of data
    seed `few_shot_seed` (`Suite.router_examples`). The PCA is fitted on the seen rows only, so
    the seen vectors do not depend on the unseen tasks or on `few_shot_seed`.
    """
    suite = ctx.suite
    fisher = torch.stack([task_fisher(ctx, dense, t, suite.router_examples(t.name, few_shot_seed)).cpu()
                          for t in suite.tasks])  # [n p]
    seen = torch.tensor([t.seen for t in suite.tasks])
    pca = FisherPCA.fit(fisher[seen], d_task)
    return pca.project(fisher).to(next(dense.parameters()).device)
