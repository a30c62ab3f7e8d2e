"""Moving between dense and routed models: upcycling and per-task extraction.

- `upcycle(dense, ...)` builds a task-MoE whose experts start as copies of a pre-trained dense
  model's layers plus small Gaussian noise (paper: copies of BART-base layers, noise eps 1e-8).
  With zero noise the MoE computes exactly the dense function under *any* routes whose gates
  sum to 1 — a property the tests check.
- `extract(model, task_id)` collapses a routed model to a plain dense model holding each
  position's chosen expert (the official code's "collapse" helper; Kudugunta et al. 2021 serve
  task-MoE this way). In eval mode with hard routes its outputs equal the routed model's.

Read next: `minimoe/train.py`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from minimoe.config import ModelConfig, RouterConfig
from minimoe.fastpool import FastExpertPool
from minimoe.model import Position, TaskMoETransformer
from minimoe.token_router import TokenMoEFFN


def _shared_keys(model: TaskMoETransformer) -> dict[str, torch.Tensor]:
    """Parameters outside the layer positions (embeddings, norms): identical in both models."""
    return {k: v for k, v in model.state_dict().items()
            if not k.startswith(("encoder.", "decoder.", "router.", "task_emb.", "fixed_routes",
                                 "task_vectors"))}


def _fill_position(dst: Position, layer: nn.Module, noise_std: float, gen: torch.Generator) -> None:
    """Copy a dense `layer` into every expert of `dst` (or into its plain layer), plus noise."""
    attention = {k: v for k, v in layer.state_dict().items() if not k.startswith("ffn.")}
    if isinstance(getattr(dst.layer, "ffn", None), TokenMoEFFN):  # token routing (token_router.py)
        dst.layer.load_state_dict(attention, strict=False)  # strict=False: the FFN slot is filled next
        dst.layer.ffn.load_dense(layer.ffn, noise_std, gen)  # token experts = FFN copies + noise
        return
    if dst.pool is None:
        dst.layer.load_state_dict(layer.state_dict())
        return
    source = layer
    if dst.ffn_only:  # expert_kind="ffn": attention is shared, only the FFN is copied per expert
        dst.layer.load_state_dict(attention)
        source = layer.ffn
    # One upcycling routine for the whole package: ExpertPool.upcycle copies and adds noise.
    device = next(dst.pool.parameters()).device
    dst.pool = FastExpertPool.upcycle(source, dst.pool.n_experts, noise_std, gen,
                                      path=dst.pool.path).to(device)


def build_model(cfg: ModelConfig, rcfg: RouterConfig, n_tasks: int) -> TaskMoETransformer:
    """The model a configuration describes: the task-MoE of `minimoe/model.py`, or with
    router_kind="token" the same transformer whose routed positions hold a `TokenMoEFFN`
    (token_top_k of n_experts FFN experts per token; lesson 09's comparison)."""
    if rcfg.router_kind == "token":
        return TaskMoETransformer(cfg, rcfg, n_tasks,
                                  routed_ffn=lambda: TokenMoEFFN(cfg, cfg.n_experts, rcfg.token_top_k))
    return TaskMoETransformer(cfg, rcfg, n_tasks)


@torch.no_grad()
def upcycle(dense: TaskMoETransformer, cfg: ModelConfig, rcfg: RouterConfig, n_tasks: int,
            noise_std: float | None = None, seed: int = 0) -> TaskMoETransformer:
    """A task-MoE (cfg.n_experts experts per routed position) initialised from `dense`.

    `dense` must have n_experts=1 and the same widths and depths as cfg. noise_std defaults
    to cfg.upcycle_noise.
    Deviations: the paper adds noise of std 1e-8; in float32 1.0 + 1e-8 == 1.0, so the copies
    would stay identical, and under soft routing identical experts give the router no
    gradient to tell them apart. We default to 1e-2 (ModelConfig.upcycle_noise).
    """
    noise_std = cfg.upcycle_noise if noise_std is None else noise_std
    if dense.n_routed:
        raise ValueError("upcycle() takes a dense model (n_experts=1); got a routed one.")
    same = ("vocab_size", "d_model", "n_heads", "d_ff", "n_enc_layers", "n_dec_layers", "max_len")
    diffs = [f"{k}: dense {getattr(dense.cfg, k)} vs moe {getattr(cfg, k)}"
             for k in same if getattr(dense.cfg, k) != getattr(cfg, k)]
    if diffs:
        raise ValueError("cannot upcycle across different shapes — " + "; ".join(diffs))
    moe = build_model(cfg, rcfg, n_tasks).to(dense.pos.device)
    moe.load_state_dict(_shared_keys(dense), strict=False)
    gen = torch.Generator().manual_seed(seed)
    for dst, src in zip(list(moe.encoder) + list(moe.decoder), list(dense.encoder) + list(dense.decoder)):
        _fill_position(dst, src.layer, noise_std, gen)
    return moe


@torch.no_grad()
def extract(model: TaskMoETransformer, task_id: int | None = None,
            gates: torch.Tensor | None = None) -> TaskMoETransformer:
    """The dense model of one task's chosen experts (argmax of its eval-mode route).

    gates [l e] may be given instead of task_id (e.g. a route chosen for an unseen task).
    Deviations: with soft routes the argmax expert is kept, so outputs match the routed model
    only where its routes are one-hot (hard routing, or softmax at low τ).
    """
    if model.rcfg.router_kind == "token":
        raise ValueError("a token-routed model picks experts per token, not per task: it has no "
                         "per-task dense model to extract; use the model itself.")
    # BEGIN EXERCISE 3.3: extract one task's dense model
    # HINT: gates None: read the task's route in eval mode (no Gumbel noise), then restore the model's mode.
    # HINT: the dense twin: its ModelConfig with one expert and nothing routed, a dense router, one
    # HINT: task, on the model's device; `_shared_keys` holds the weights outside the layer positions.
    # HINT: walk encoder then decoder positions together; a position without a pool is a plain layer,
    # HINT: and only pooled positions consume an entry of the route (an ffn expert is only the FFN).
    # HINT: return the dense model in the same train/eval mode as `model`.
    if gates is None:
        was_training = model.training
        model.eval()
        gates = model.task_routes()[task_id]  # [l e]
        model.train(was_training)
    chosen = gates.argmax(-1).tolist()  # one expert per routed position
    cfg = dataclasses.replace(model.cfg, n_experts=1, routed="none")
    dense = TaskMoETransformer(cfg, dataclasses.replace(model.rcfg, routing="dense"), 1)
    dense = dense.to(model.pos.device)
    dense.load_state_dict(_shared_keys(model), strict=False)
    i = 0
    for dst, src in zip(list(dense.encoder) + list(dense.decoder), list(model.encoder) + list(model.decoder)):
        if src.pool is None:
            dst.layer.load_state_dict(src.layer.state_dict())
            continue
        expert = src.pool.experts[chosen[i]]
        i += 1
        if src.ffn_only:  # ffn experts: rebuild the layer from shared attention + chosen FFN
            dst.layer.load_state_dict(src.layer.state_dict(), strict=False)
            dst.layer.ffn.load_state_dict(expert.state_dict())
        else:
            dst.layer.load_state_dict(expert.state_dict())
    return dense.train(model.training)
    # END EXERCISE 3.3
