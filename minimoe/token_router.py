"""Token-level routing: every token picks its own top-k FFN experts from its hidden state.

The second router kind beside the task router (`minimoe/router.py`), for the side-by-side
comparison of lesson 09. The task router reads a task vector and gives all tokens of a task one
route; here a linear gate reads each token's hidden state (Shazeer et al. 2017; GShard,
Lepikhin et al. 2020, k = 2; Switch Transformer, Fedus et al. 2021, k = 1):

    logits = x W_g                      [b s e]
    gates  = top-k of softmax(logits), renormalised to sum to 1
    y      = x + Σ_e gates[.., e] · FFN_e(LayerNorm(x))

Two auxiliary losses keep the router healthy: the Switch/GShard load-balancing loss
e · Σ_e f_e · P_e (f_e the share of token dispatches sent to expert e, P_e its mean router
probability; 1 when routing is perfectly uniform) and the ST-MoE router z-loss
mean(logsumexp(logits)²) (Zoph et al. 2022), which keeps logits small and the softmax stable.

Capacity. Switch and GShard give each expert a fixed buffer of C = capacity_factor · k · T / e
token slots (T tokens in the batch), so that expert batches have static shapes on TPUs; a token
past the buffer is dropped (it keeps only the residual). capacity_factor 1.0 means an expert
takes exactly its fair share, 1.25 (Switch's default) tolerates 25 % imbalance. We are
**dropless**: the tokens are flattened to [(b s) d] and grouped per expert with the same
`group_rows` / `dispatch` / `combine` as task-level hard routing (`minimoe/experts.py`), so
every token reaches its k experts whatever the imbalance (as in MegaBlocks). At our sizes
(~10³ tokens, 3 experts, CPU) uneven expert batches cost nothing, and dropping would couple the
tokens of a batch: a future decoder token could push a past one out of an expert and break
causality. Padding tokens are routed too (the FFN slot of a layer receives no padding mask).

Read next: `minimoe/model.py` (a `TokenMoEFFN` takes the FFN slot of a routed layer when
`router_kind="token"`), then `minimoe/bench_models.py::token_ffn_step_ratio` (its cost beside a dense FFN).
"""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from minimoe.config import ModelConfig
from minimoe.errors import ConfigError
from minimoe.fastpool import FastExpertPool
from minimoe.layers import FeedForwardBlock


def _check_top_k(k: int, n_experts: int) -> None:
    if not 1 <= k <= n_experts:
        raise ConfigError(f"top-k={k} must be between 1 and n_experts={n_experts} (a token cannot "
                          f"pick more experts than there are); set --token_top_k=1 or 2.")


def _at_least_fp32(t: Tensor) -> Tensor:
    """Losses in float32 or float64: bf16 logits (CUDA autocast) would round the exponentials."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class TokenRouter(nn.Module):
    """A linear gate over each token's hidden state: x [b s d] -> logits [b s e].

    No bias, as in Switch. PyTorch's default Linear init gives logits of std ≈ 0.6 on
    LayerNorm'd inputs: routing starts spread over the experts, the softmax unsaturated.
    """

    def __init__(self, d_model: int, n_experts: int):
        super().__init__()
        self.gate = nn.Linear(d_model, n_experts, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(x)


def top_k_gates(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Sparse gates from router logits: the k most probable experts per token, renormalised.

    logits [... e] (e.g. [b s e]) -> (gates [... e] with k nonzeros summing to 1, probs [... e]
    the full softmax, which the load-balancing loss needs).
    The forward value is the renormalised top-k (GShard, Mixtral): with identical (upcycled)
    experts the layer then equals the dense FFN. The gradient is that of the raw top-k
    probabilities (Switch's gate p_e), passed straight through as in `router.py::st_gumbel_routes`:
    with k = 1 the renormalised gate is the constant 1 and would give the router no gradient.
    Deviations: GShard back-propagates through the renormalisation; Switch (k = 1) does not
    renormalise. Ties go to the lower expert index (torch.topk).
    """
    _check_top_k(k, logits.shape[-1])
    # BEGIN EXERCISE 9.1: top-k gates
    # HINT: the line after this region returns `gates, probs`: assign both names.
    # HINT: probs is the full softmax over the experts. Keep its k largest entries (torch.topk) in
    # HINT: an otherwise zero tensor of probs' shape, without in-place ops (autograd), and
    # HINT: renormalise them to sum to 1 over the expert axis.
    # HINT: the value of gates is the renormalised one, its gradient that of the raw top-k
    # HINT: probabilities: the straight-through trick of exercise 4.1.
    probs = logits.softmax(dim=-1)  # [... e]
    top_probs, top_experts = probs.topk(k, dim=-1)  # [... k]
    sparse = torch.zeros_like(probs).scatter(-1, top_experts, top_probs)  # [... e], k nonzeros
    renormalised = sparse / reduce(sparse, "... e -> ... 1", "sum")
    gates = renormalised.detach() + (sparse - sparse.detach())  # value: renormalised; gradient: sparse's
    # END EXERCISE 9.1
    return gates, probs


def load_balancing_loss(probs: Tensor, gates: Tensor) -> Tensor:
    """Switch/GShard auxiliary loss e · Σ_e f_e · P_e over all tokens (Fedus et al. eq. 4).

    probs [... e] the router softmax, gates [... e] the sparse gates (nonzero = dispatched).
    f_e = share of the token→expert dispatches that go to e (k per token, so Σ_e f_e = 1), P_e =
    mean router probability of e. Perfectly uniform routing gives exactly 1. f_e counts and has
    no gradient; the loss lowers the probability of overloaded experts through P_e.
    Deviations: for k = 2 GShard counts only each token's first choice; we count all k.
    """
    probs = _at_least_fp32(probs)
    dispatched = (gates.detach() != 0).to(probs.dtype)  # [... e], k ones per token
    flat_probs = rearrange(probs, "... e -> (...) e")  # [tokens e]
    flat_dispatch = rearrange(dispatched, "... e -> (...) e")
    share = reduce(flat_dispatch, "n e -> e", "sum") / flat_dispatch.sum()  # f [e]
    mean_prob = reduce(flat_probs, "n e -> e", "mean")  # P [e]
    return probs.shape[-1] * (share * mean_prob).sum()


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)² (Zoph et al. 2022, eq. 5).

    logits [... e] -> scalar. Penalises large logits, which round badly and saturate the softmax.
    """
    z = torch.logsumexp(_at_least_fp32(logits), dim=-1)  # [...]
    return z.square().mean()


class TokenMoEFFN(nn.Module):
    """Pre-LN residual FFN block whose FFN experts are chosen per token: x + Σ_e g_e FFN_e(LN(x)).

    forward(x [b s d], **ctx) -> [b s d]. One LayerNorm is shared (the router and the experts read
    the same normalised tokens); each expert is the FFN sub-network of a `FeedForwardBlock`, held
    in an `ExpertPool` that sees the tokens as rows [(b s) d]. Dropless (module docstring).
    After each forward, `balance_loss` and `z_loss` hold that forward's auxiliary losses and
    `last_gates` [b s e] its gates, detached (for route statistics: `last_gates.argmax(-1)` is
    each token's first choice);
    `minimoe/model.py::TaskMoETransformer.aux_loss` weights and collects the losses.
    Deviations: none beyond `top_k_gates`'.
    """

    def __init__(self, cfg: ModelConfig, n_experts: int, k: int):
        super().__init__()
        _check_top_k(k, n_experts)
        self.k = k
        self.norm = nn.LayerNorm(cfg.d_model)
        self.router = TokenRouter(cfg.d_model, n_experts)
        # The dense block's own FFN, so that the two definitions can never drift apart.
        self.pool = FastExpertPool([FeedForwardBlock(cfg).ffn for _ in range(n_experts)])
        self.drop = nn.Dropout(cfg.dropout)
        self.balance_loss: Tensor | None = None
        self.z_loss: Tensor | None = None
        self.last_gates: Tensor | None = None

    @property
    def n_experts(self) -> int:
        return self.pool.n_experts

    def forward(self, x: Tensor, **ctx) -> Tensor:
        h = self.norm(x)  # [b s d]
        logits = self.router(h)  # [b s e]
        gates, probs = top_k_gates(logits, self.k)
        self.balance_loss, self.z_loss = load_balancing_loss(probs, gates), router_z_loss(logits)
        self.last_gates = gates.detach()  # [b s e]; kept, not reduced: argmax costs as much as the router
        # Tokens are the rows of the pool: grouped per expert, every token to its k experts.
        tokens = rearrange(h, "b s d -> (b s) d")
        out = self.pool(tokens, rearrange(gates, "b s e -> (b s) e"))  # [(b s) d]
        return x + self.drop(rearrange(out, "(b s) d -> b s d", b=x.shape[0]))

    @torch.no_grad()
    def load_dense(self, block: FeedForwardBlock, noise_std: float,
                   generator: torch.Generator | None = None) -> None:
        """Upcycle from a dense FFN block: its LayerNorm, and every expert a copy of its FFN plus
        N(0, noise_std²) (`ExpertPool.upcycle`, the package's one upcycling routine). The router
        keeps its fresh initialisation (sparse upcycling, Komatsuzaki et al. 2022)."""
        self.norm.load_state_dict(block.norm.state_dict())
        device = next(self.pool.parameters()).device
        self.pool = FastExpertPool.upcycle(block.ffn, self.n_experts, noise_std, generator,
                                          path=self.pool.path).to(device)

    def take_aux_loss(self, balance_weight: float, z_weight: float) -> Tensor | float:
        """balance_weight · balance_loss + z_weight · z_loss of the last forward (0.0 if none),
        and forget them: each forward's losses count once, and no autograd graph outlives the
        step (a module holding one could not be deep-copied)."""
        if self.balance_loss is None:
            return 0.0
        total = balance_weight * self.balance_loss + z_weight * self.z_loss
        self.balance_loss = self.z_loss = None
        return total
