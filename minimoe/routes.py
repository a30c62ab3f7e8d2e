"""Routes as the studies read them: per upstream seed, pooled over seeds, and token routes as task routes.

Input: results[cell][upstream_seed] = {"routes", "config", ...} as written by
`minimoe/reproduce.py::run_cell` (routes [n l e]: task, routed layer position, expert).

Each seed trains its own router, so expert 0 of one seed has nothing to do with expert 0 of
another: seeds are never averaged. With one task split for every seed, the routes of the tasks
seen in every seed are concatenated along the layer axis (`pooled_routes`, [n (seeds l) e]), so
`per_layer_nmi` is the mean over seeds and layers and one permutation of the labels applies to
every seed at once. With a split per seed (`reproduce --resplit`) there is nothing to pool task
by task: each seed's own seen tasks form a stratum (`seen_strata`) for
`report.stratified_route_stats`. Used by the reports of `minimoe reproduce` and `minimoe verdicts`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from einops import rearrange

from minimoe.config import Config
from minimoe.crossfit_suite import load_suite
from minimoe.evaluate import task_data
from minimoe.token_router import TokenMoEFFN


def split_seeds(results: dict) -> dict:
    """{upstream seed: the split_seed its cells ran with} (-1: the catalogue's split)."""
    split = {}
    for cells in results.values():
        for seed, cell in cells.items():
            split.setdefault(seed, Config.from_dict(cell["config"]).data.split_seed if "config" in cell else -1)
    return split


def seed_suites(cfg: Config, results: dict) -> dict:
    """{upstream seed: its suite}; seeds differ only when the cells were run with --resplit."""
    split = split_seeds(results)
    built = {k: load_suite(dataclasses.replace(cfg.data, split_seed=k)) for k in set(split.values())}
    return {seed: built[k] for seed, k in split.items()}


def always_seen(suites: dict) -> list[str]:
    """Names of the tasks seen in every seed's suite, in catalogue order."""
    first = next(iter(suites.values()))
    return [t.name for t in first.tasks if all(s.task(t.name).seen for s in suites.values())]


@torch.no_grad()
def token_routes(model, ctx, batch_size: int = 128) -> np.ndarray:
    """Token routes vs categories: token-level routing seen as task routes → [n l e].

    Per task, the share of its real (non-padding) tokens whose first-choice expert is e, at each
    token-routed position l (encoder positions read source tokens, decoder positions target
    tokens under teacher forcing): seen tasks over their held-out examples, unseen tasks over
    their test examples, with no fine-tuning. `route_stats` then asks whether tasks of a
    category share their most-used experts, as it asks of task routes.
    """
    blocks = [(p.layer.ffn, decoder) for decoder, stack in ((False, model.encoder), (True, model.decoder))
              for p in stack if isinstance(p.layer.ffn, TokenMoEFFN)]
    n_experts, pad = model.cfg.n_experts, ctx.tokenizer.pad_id
    routes = np.zeros((len(ctx.suite.tasks), len(blocks), n_experts))
    model.eval()
    for task in ctx.suite.tasks:
        examples = ctx.suite.held_out(task.name) if task.seen else ctx.suite.few_shot(task.name, 100)["test"]
        counts = torch.zeros(len(blocks), n_experts)  # [l e]
        for batch in task_data(ctx, task, examples).batches(batch_size):
            model(batch.src, batch.tgt_in, pad_id=pad)  # every block keeps its tokens' choices
            for i, (block, decoder) in enumerate(blocks):
                real = (batch.tgt_in if decoder else batch.src) != pad  # [b s]
                first_choice = block.last_gates.argmax(-1)[real]  # [real tokens]
                counts[i] += torch.bincount(first_choice.cpu(), minlength=n_experts)
        routes[ctx.task_index[task.name]] = (counts / counts.sum(-1, keepdim=True).clamp(min=1)).numpy()
    return routes  # [n l e]


def pooled_routes(results: dict, cell: str, seen_idx: list[int] | dict[int, list[int]]) -> np.ndarray:
    """Seen-task routes of every seed, stacked along the layer axis → [n (seeds l) e].

    seen_idx: the rows to keep, the same in every seed, or {seed: rows} when the seeds' suites
    order their tasks differently (a split per seed with relatedness < 1 drops other tasks).
    """
    rows = seen_idx if isinstance(seen_idx, dict) else {seed: seen_idx for seed in results[cell]}
    stack = np.stack([np.asarray(r["routes"])[rows[seed]] for seed, r in results[cell].items()])  # [seeds n l e]
    return rearrange(stack, "seeds n l e -> n (seeds l) e")


def always_seen_routes(results: dict, cell: str, suites: dict) -> tuple[np.ndarray, list[str]]:
    """(`pooled_routes` of the tasks seen in every seed [n (seeds l) e], their names [n])."""
    names = always_seen(suites)
    rows = {seed: [[t.name for t in su.tasks].index(n) for n in names] for seed, su in suites.items()}
    return pooled_routes(results, cell, rows), names


def seen_strata(results: dict, cell: str, suites: dict) -> tuple[list[tuple[np.ndarray, list[str], list[str]]], list[list[str]]]:
    """Per seed, its seen tasks' routes [n_s l e], categories [n_s] and skills [n_s] — the strata of
    `report.stratified_route_stats` when every seed has its own split (nothing to pool task by
    task) — and, per seed, those tasks' names (for the shuffles shared between seeds)."""
    strata, names = [], []
    for seed, r in results[cell].items():
        seen = [(i, t) for i, t in enumerate(suites[seed].tasks) if t.seen]
        routes = np.asarray(r["routes"])[[i for i, _ in seen]]
        strata.append((routes, [t.category for _, t in seen], [t.skill for _, t in seen]))
        names.append([t.name for _, t in seen])
    return strata, names
