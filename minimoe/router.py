"""The task router: a task vector in, one expert choice per routed layer position out.

Paper §3 ("Router"; lessons/paper_facts.md): every task gets one vector (a learned embedding, or the
mean-pooled encoder states of its instruction or examples — `mean_pool`); `TaskRouter` runs one
small MLP per layer position, d → 64 → GELU → m logits; a selection function turns the logits
into gates [n l e] that weight the experts of each `ExpertPool`.

The temperature τ divides the logits before the softmax. A high τ flattens the gates towards
uniform (every expert gets ~1/m: "average routing"); a low τ sharpens them towards one-hot
(one expert per task and layer). Training starts warm and cools along `tau_schedule`, so tasks
explore experts first and commit later.

Why straight-through: a one-hot choice has no gradient (argmax is flat almost everywhere), yet
we want the forward pass to run only the chosen expert — cheap, and the same computation as the
dense model `extract(task)` serves. `st_gumbel_routes` returns the exact one-hot in the forward
pass and, in the backward pass, the gradient of the soft Gumbel-softmax sample it came from.

Routing baselines live here too: `average_routes` (uniform) and `random_task_routes` (a fixed
random table). Read next: `minimoe/model.py`, which feeds these gates to the expert pools.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, reduce
from torch import Tensor, nn

from minimoe.config import SELECTIONS
from minimoe.errors import ConfigError


def tau_schedule(step: int, tau0: float, tau_min: float, decay: float) -> float:
    """Temperature at a training step: τ(t) = max(τ0·exp(−decay·t), τ_min).

    Paper defaults τ0 = 2.0, τ_min = 0.1, decay = 3e-4 reach τ_min after ln(20)/3e-4 ≈ 9,986 steps.
    The same schedule anneals stage 2 of two-stage training (τ0 = 300 → τ_min = 1).
    """
    # BEGIN EXERCISE 4.2: exponential temperature decay with a floor
    # HINT: math.exp(-decay * step) shrinks from 1 towards 0 as the step grows.
    # HINT: the floor τ_min stops the gates from collapsing to one-hot, where softmax gradients vanish.
    return max(tau0 * math.exp(-decay * step), tau_min)
    # END EXERCISE 4.2


def auto_tau_decay(tau0: float, tau_min: float, steps: int, reach: float = 0.7) -> float:
    """The decay rate at which τ falls from tau0 to tau_min after `reach` of `steps` steps.

    The paper's 3e-4 suits 30k steps; a 600-step CPU run would end at τ ≈ 1.7, far from hard routes.
    """
    return math.log(tau0 / tau_min) / max(1.0, reach * steps)


def stage_taus(tau0: float, tau_end: float, steps: int, decay: float = -1.0,
               reach: float = 0.7) -> Callable[[int], float]:
    """The router temperature of every step of one training stage, step -> τ: `tau_schedule`
    from tau0 down to tau_end, at rate `decay` (the paper's 3e-4) or, when decay < 0, at the
    rate that reaches tau_end after `reach` of the stage's `steps` (`auto_tau_decay`)."""
    rate = decay if decay >= 0 else auto_tau_decay(tau0, tau_end, steps, reach)
    return lambda step: tau_schedule(step, tau0, tau_end, rate)


def softmax_routes(logits: Tensor, tau: float) -> Tensor:
    """Soft gates softmax(logits / τ) over the last axis: [... e] → [... e], rows sum to 1."""
    return torch.softmax(logits / tau, dim=-1)


def gumbel_softmax_routes(logits: Tensor, tau: float, generator: torch.Generator | None = None) -> Tensor:
    """A noisy soft sample softmax((logits + g) / τ), g ~ Gumbel(0, 1) i.i.d.: [... e] → [... e].

    The argmax of logits + g is distributed as softmax(logits) (the Gumbel-max trick), so the
    noise makes the router *explore* in proportion to its own belief. `generator` makes the sample
    reproducible; the noise is drawn on the generator's device (the trainer's is a CPU generator)
    and moved to the logits, so CPU and CUDA runs of one seed draw the same routes.
    """
    noise_device = generator.device if generator is not None else logits.device
    uniform = torch.rand(logits.shape, generator=generator, device=noise_device,
                         dtype=logits.dtype).to(logits.device)
    # rand is in [0, 1); a 0 would give log(0) = -inf, so lift it to the smallest positive float.
    uniform = uniform.clamp_min(torch.finfo(logits.dtype).tiny)
    gumbel = -torch.log(-torch.log(uniform))  # inverse CDF of the Gumbel distribution
    return softmax_routes(logits + gumbel, tau)


def hard_routes(logits: Tensor) -> Tensor:
    """Exact one-hot of the argmax over the last axis (ties → the first expert): [... e] → [... e]."""
    return F.one_hot(logits.argmax(dim=-1), num_classes=logits.shape[-1]).to(logits.dtype)


def st_gumbel_routes(logits: Tensor, tau: float, generator: torch.Generator | None = None) -> Tensor:
    """Straight-through hard Gumbel: forward exactly one-hot, backward the soft sample's gradient.

    [... e] → [... e]. Draws the same noise as `gumbel_softmax_routes` with the same generator
    state, so its argmax is that soft sample's argmax and its gradient is that sample's gradient.
    The paper's default selection (Jang et al. 2017, straight-through estimator).
    """
    # BEGIN EXERCISE 4.1: straight-through Gumbel-softmax
    # HINT: two functions above already draw the soft sample and make a one-hot: reuse them, so
    # HINT: the noise is the one gumbel_softmax_routes draws with the same generator.
    # HINT: you need a tensor with the one-hot's value and the soft sample's gradient. What is
    # HINT: x - x.detach() in the forward pass, and what is its gradient?
    soft = gumbel_softmax_routes(logits, tau, generator)
    hard = hard_routes(soft)
    return hard + (soft - soft.detach())
    # END EXERCISE 4.1


def select_routes(
    logits: Tensor, selection: str, tau: float, training: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Turn router logits [... e] into gates [... e] with one of `SELECTIONS`.

    Training: softmax → `softmax_routes`; gumbel → `gumbel_softmax_routes`; st_gumbel →
    `st_gumbel_routes`. Evaluation is deterministic: softmax keeps softmax(logits / τ); the two
    Gumbel modes take the noiseless argmax (`hard_routes`), the route `extract(task)` serves.

    Deviations: the paper's evaluation code is not described; we drop the noise at evaluation so
    that a task's route, and hence its score, does not change from one evaluation to the next.
    """
    if selection not in SELECTIONS:
        raise ConfigError(f"selection={selection!r} is not one of {SELECTIONS}; "
                          "set --selection=<one of these>.")
    if selection == "softmax":
        return softmax_routes(logits, tau)
    if not training:
        return hard_routes(logits)
    if selection == "gumbel":
        return gumbel_softmax_routes(logits, tau, generator)
    return st_gumbel_routes(logits, tau, generator)


def average_routes(n: int, l: int, e: int) -> Tensor:
    """Average routing baseline: every task gives every expert weight 1/e. Returns [n l e]."""
    return torch.full((n, l, e), 1.0 / e)


def random_task_routes(n_tasks: int, n_layers: int, n_experts: int, top_k: int, seed: int) -> Tensor:
    """Random task-level routing baseline: a fixed table of top_k experts per task and layer.

    Returns [n l e] with exactly top_k entries of 1/top_k per (task, layer) row, the rest 0.
    The same seed gives the same table; task i's rows do not depend on n_tasks (its random
    scores are the i-th slice of one seeded stream), so adding tasks keeps old routes.
    """
    if not 1 <= top_k <= n_experts:
        raise ConfigError(f"random_top_k={top_k} must be between 1 and n_experts={n_experts}; "
                          f"set --random_top_k to at most {n_experts}.")
    generator = torch.Generator().manual_seed(seed)
    # A random score per expert; the top_k highest are a uniformly random subset of size top_k.
    scores = torch.rand(n_tasks, n_layers, n_experts, generator=generator)
    chosen = scores.topk(top_k, dim=-1).indices  # [n l top_k]
    table = torch.zeros(n_tasks, n_layers, n_experts)
    return table.scatter_(-1, chosen, 1.0 / top_k)


def mean_pool(states: Tensor, mask: Tensor) -> Tensor:
    """Masked mean over the source axis: states [b s d], mask [b s] bool (True = real token) → [b d].

    The paper's TextEmb task representation: mean-pooled encoder states of a task's text.
    A row with no real token pools to zeros (not 0/0 = NaN).
    """
    # BEGIN EXERCISE 4.3: masked mean pooling
    # HINT: zero the padded positions first (masked_fill), so even a NaN there cannot leak in.
    # HINT: divide the sum of real states by the count of real tokens, counted at least once.
    keep = rearrange(mask, "b s -> b s 1")
    total = reduce(states.masked_fill(~keep, 0.0), "b s d -> b d", "sum")
    count = reduce(mask.to(states.dtype), "b s -> b 1", "sum").clamp_min(1.0)
    return total / count
    # END EXERCISE 4.3


class TaskRouter(nn.Module):
    """One MLP per routed layer position, task vector → expert logits (paper: d → 64 → GELU → 3).

    The l MLPs are stored stacked — w_in [l d r], b_in [l r], w_out [l r e], b_out [l e] — and
    applied at once with einsum; this equals l separate `nn.Linear` pairs (tested), and each
    layer position's weights only ever touch its own logits.
    """

    # Target scale of the initial logits: std <= 0.02 keeps gates within a few % of 1/e.
    logit_init_std = 0.02

    def __init__(self, d_in: int, n_layers: int, n_experts: int, d_hidden: int = 64) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(n_layers, d_in, d_hidden))
        self.b_in = nn.Parameter(torch.empty(n_layers, d_hidden))
        self.w_out = nn.Parameter(torch.empty(n_layers, d_hidden, n_experts))
        self.b_out = nn.Parameter(torch.empty(n_layers, n_experts))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Hidden layer at unit scale; output layer small, so the first routes are near uniform.

        Deviations: the paper does not state its init. Why small logits: upcycled experts start
        as near-identical copies, so a confident route at step 0 would be an arbitrary choice
        that the straight-through gradient (which flows only through the chosen expert) is slow
        to undo. Near-uniform gates start from average routing (the stable baseline) and let
        the Gumbel noise explore every expert until the experts have specialised.
        """
        d_in, d_hidden = self.w_in.shape[1:]
        # Fan-in scaling: a sum of d_in terms of std 1/sqrt(d_in) keeps hidden units at the
        # task vector's per-coordinate scale, so different tasks still get different features.
        nn.init.normal_(self.w_in, std=d_in**-0.5)
        nn.init.zeros_(self.b_in)
        # Each logit sums d_hidden GELU units (each of std < 1), so this std keeps the logits'
        # std below logit_init_std for unit-scale task vectors (smaller vectors: smaller logits).
        nn.init.normal_(self.w_out, std=self.logit_init_std * d_hidden**-0.5)
        nn.init.zeros_(self.b_out)

    def forward(self, task_vecs: Tensor) -> Tensor:
        """task_vecs [n d] → route logits [n l e]; feed them to `select_routes`."""
        hidden = einsum(task_vecs, self.w_in, "n d, l d r -> n l r") + self.b_in
        hidden = F.gelu(hidden)
        return einsum(hidden, self.w_out, "n l r, l r e -> n l e") + self.b_out
