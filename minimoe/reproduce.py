"""`minimoe reproduce`: the paper's two findings, every method, several upstream seeds.

For each upstream seed: pre-train the dense base once; train every method on the seen tasks
with the same budget; score seen tasks; score every unseen task zero-shot and few-shot (k-shot
train/dev for each data seed, lr chosen on dev). Each (seed, method) is one *cell* saved as
JSON the moment it finishes, so an interrupted run resumes without recomputing finished cells.

Then: every method vs the dense multi-task model (few-shot and zero-shot) by the paired
endpoints of `minimoe/endpoints.py` (points over upstream seeds, ARG beside its swap null); few-shot
vs direct fine-tuning of the pre-trained model (CrossFit's convention); and the route analysis (NMI and selectivity vs
categories with permutation p-values) for learned task embeddings and for instruction vectors.
The `fisher` cell (two-stage training over the Fisher task vectors of `minimoe/fisher.py`) routes
each data seed's unseen tasks from that seed's labelled few-shot train set: few-shot scores only.

`--resplit` gives every upstream seed its own seen/unseen split of the suite (`seed_config`):
the unseen tasks become a sample that grows with the seeds; each seed's comparison is over its
own unseen tasks, then over seeds, as for one split. Deviation: the paper uses one split.

Its command line (flags, `--quick`, the output folder): `minimoe/reproduce_cli.py`.
Read next: `lessons/07_transfer_and_arg.md`, `lessons/08_routes.md`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from minimoe.batched import few_shot_all
from minimoe.checkpoint import check_config, science
from minimoe.config import Config, read_config
from minimoe.errors import ConfigError
from minimoe.evaluate import evaluate, seen_route, unseen_route, zero_shot
from minimoe.fisher import fisher_task_vectors
from minimoe.interference import oracle_routes
from minimoe.interrupt import worker_job, worker_pool
from minimoe.memory import check_memory
from minimoe.phases import phase, take_phases
from minimoe.presets import apply_overrides
from minimoe.pipeline import make_context, method_config, pretrain, train_upstream
from minimoe.routes import token_routes
from minimoe.runner import make_out_dir
from minimoe.snapshots import route_snapshot
from minimoe.crossfit_suite import load_suite

# name → (pipeline method, extra overrides). The ARG methods route unseen tasks from their
# instruction vector (so zero-shot needs no gradient step); `learned_emb` learns one embedding
# per seen task from scratch — no category hint — for the route analysis (finding 2).
CELLS: dict[str, tuple[str, dict]] = {
    "pretrained": ("dense", {}),  # no upstream training: CrossFit's direct fine-tuning baseline
    "dense": ("dense", {}),
    "average": ("average", {}),
    "random": ("random", {}),
    # Routes fixed by the interference groups (`--groups`, minimoe/interference.py): the positive control.
    "oracle": ("oracle", {}),
    "learned": ("learned", {"task_repr": "instruction"}),
    "two_stage": ("two_stage", {"task_repr": "instruction"}),
    # Stage 2 alone gets the other methods' budget (2× in all): what the shared budget costs.
    "two_stage_2x": ("two_stage", {"task_repr": "instruction", "two_stage_budget": "each"}),
    "learned_emb": ("learned", {"task_repr": "learned"}),
    # Token-level routing (minimoe/token_router.py), same experts and budget: lesson 09's comparison.
    "token": ("token", {}),
    # two_stage with the paper's Fisher-information task vectors (minimoe/fisher.py): an unseen
    # task is routed from its few-shot train set (per data seed), so this cell has no zero-shot score.
    "fisher": ("two_stage", {"task_repr": "fisher"}),
}
# The cells a plain `reproduce` runs: all but the oracle, which needs interference groups (--cells=...,oracle).
DEFAULT_CELLS = tuple(c for c in CELLS if c != "oracle")


def _seed_context(cfg: Config, seed: int, out: Path, work: str, quiet: bool):
    """The pipeline context of one job of an upstream seed: its own work folder, and the seed's
    one dense base (out/seed{seed}/pretrain.pt) shared by all its cells."""
    ctx = make_context(cfg, load_suite(cfg.data), out / f"seed{seed}" / "work" / work, quiet=quiet)
    ctx.pretrain_path = out / f"seed{seed}" / "pretrain.pt"
    return ctx


def cell_path(out: Path, seed: int, name: str) -> Path:
    """Where the cell (method `name`, upstream seed) lives: out/seed{seed}/{name}.json."""
    return out / f"seed{seed}" / f"{name}.json"


def seed_config(cfg: Config, seed: int, resplit: bool = False, extra: dict | None = None) -> Config:
    """The config of one upstream seed's jobs: its seed, and with `resplit` its own task split
    (split_seed = the upstream seed: each seed holds out other tasks, see tasks.resplit)."""
    if resplit and cfg.data.split_seed != -1:
        raise ConfigError(f"--resplit draws a split per upstream seed, but split_seed={cfg.data.split_seed} "
                          f"fixes one; drop --set split_seed or drop --resplit.")
    return apply_overrides(cfg, dict(extra or {}, seed=seed, **({"split_seed": seed} if resplit else {})))


def run_cell(cfg: Config, name: str, seed: int, data_seeds: tuple[int, ...], out: Path,
             quiet: bool = True, resplit: bool = False) -> dict:
    """Train and score one (method, upstream seed) cell; cached in out/seed{seed}/{name}.json."""
    path = cell_path(out, seed, name)
    method, extra = CELLS[name]
    cfg = seed_config(cfg, seed, resplit, extra)
    if path.is_file():
        cell = json.loads(path.read_text())
        if science(cell.get("config", {})) == science(cfg.to_dict()) and cell.get("data_seeds") == list(data_seeds):
            return cell  # finished earlier with the same settings: not recomputed
        raise ConfigError(f"{path} was computed with other settings; rerun with the same preset, "
                          f"--set values and --resplit (or not), or choose a new --out.")
    ctx = _seed_context(cfg, seed, out, name, quiet)
    start, _ = time.perf_counter(), take_phases()  # this cell's phases only
    with phase("pretrain"):
        dense = pretrain(ctx)
    with phase("upstream"):
        model = dense if name == "pretrained" else train_upstream(ctx, method, dense)
    model.eval()
    cell = {"name": name, "seed": seed, "seen": {}, "zero_shot": {}, "few_shot": {}}
    with phase("seen_eval"):
        for task in ctx.suite.seen_tasks():
            cell["seen"][task.name] = evaluate(model, ctx, task, ctx.suite.held_out(task.name),
                                               seen_route(model, ctx, task))
    routes = route_snapshot(model)
    if model.rcfg.router_kind == "token":  # per task, its tokens' expert usage [n l e]
        routes = token_routes(model, ctx)
    # Fisher vectors need labels: each data seed routes its unseen tasks from its own train split.
    with phase("route_selection"):
        fisher = ({ds: fisher_task_vectors(ctx, dense, cfg.router.d_task, ds) for ds in data_seeds}
                  if model.routes_from_labels else {})
    todo = []  # (task, data seed, route) of every few-shot fine-tune: the routes are fixed first
    for task in ctx.suite.unseen_tasks():
        cell["few_shot"][task.name] = []
        for ds in data_seeds:
            split = ctx.suite.few_shot(task.name, ds)
            if fisher:
                model.set_task_vectors(fisher[ds])  # seen rows are the same for every data seed
            with phase("route_selection"):
                gates = unseen_route(model, ctx, task, split["dev"])
            if ds == data_seeds[0]:
                if not fisher:
                    with phase("zero_shot"):
                        cell["zero_shot"][task.name] = zero_shot(model, ctx, task, gates)
                if gates is not None:
                    routes[ctx.task_index[task.name]] = gates.float().cpu().numpy()
            todo.append((task, ds, gates))
    for (task, _, _), best in zip(todo, few_shot_all(model, ctx, todo)):  # batched: cfg.train.fs_batched
        cell["few_shot"][task.name].append(best["test"])
    cell["routes"] = routes.tolist()
    cell["config"], cell["data_seeds"] = cfg.to_dict(), list(data_seeds)
    cell["seconds"], cell["phase_seconds"] = time.perf_counter() - start, take_phases()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell))
    tmp.replace(path)  # atomic: a cell file is whole or absent
    return cell


# Relative cost of each cell: mean seconds measured on 2026-11-26 (preset repro, 1 thread, 2
# cells at a time on the 2-core machine). The parallel scheduler starts the longest cells first,
# so no process idles at the end; only the order matters.
CELL_SECONDS = {"learned_emb": 281, "two_stage_2x": 270, "average": 193, "two_stage": 184, "learned": 169,
                "token": 136, "random": 98, "oracle": 98, "dense": 73, "pretrained": 67,
                "fisher": 184}  # not measured: two_stage's, which it repeats with other task vectors


def _pretrain_job(args: tuple) -> None:
    """Pre-train (or find) the dense base of one upstream seed, shared by all its cells."""
    cfg, seed, out, resplit = args
    cfg = seed_config(cfg, seed, resplit)
    with worker_job():
        pretrain(_seed_context(cfg, seed, out, "pretrain", quiet=True))


def _cell_job(args: tuple) -> None:
    """One (method, upstream seed) cell in a worker process; the result lands on disk."""
    with worker_job():
        run_cell(*args)


def reproduce(cfg: Config, out: Path, seeds: tuple[int, ...], data_seeds: tuple[int, ...],
              cells: tuple[str, ...] = DEFAULT_CELLS, quiet: bool = True, jobs: int = 1,
              resplit: bool = False, quick: bool = False) -> dict:
    """Run every cell (resuming finished ones), then write the tables and figures (`quick`: with
    the banner that says the numbers are meaningless).

    resplit draws a seen/unseen task split per upstream seed (`seed_config`); each seed's
    comparison is then over its own unseen tasks.

    jobs > 1 runs cells in parallel processes (one CPU thread each is best on a small machine:
    see the note on threads in minimoe/presets.py::PRESETS): first every seed's dense base,
    then all (seed, method) cells, longest first, each to the next free process.
    """
    start = time.perf_counter()
    _preflight(cfg, out, seeds, cells, jobs, resplit)
    _same_settings(cfg, out)
    if jobs > 1:
        # Finished cells are left to the sequential pass below (it reads them back, or rejects
        # a cell of other settings), so a rebuild of the tables trains nothing.
        todo = sorted(((cfg, n, s, data_seeds, out, True, resplit) for s in seeds for n in cells
                       if not cell_path(out, s, n).is_file()),
                      key=lambda job: -CELL_SECONDS.get(job[1], 0))
        # Leaving the `with` on any path (error, Ctrl-C, SIGTERM) stops the workers; each
        # checkpoints its current step first, and one whose parent was killed stops by itself.
        with worker_pool(jobs) as pool:
            pending_seeds = sorted({job[2] for job in todo})
            pool.map(_pretrain_job, [(cfg, s, out, resplit) for s in pending_seeds], chunksize=1)
            for _ in tqdm(pool.imap_unordered(_cell_job, todo, chunksize=1), total=len(todo),
                          desc="reproduce cells", dynamic_ncols=True):
                pass
            # Let the workers exit on their own: leaving the `with` block terminates them, and a
            # killed worker leaves its tqdm lock to the resource tracker ("leaked semaphore").
            pool.close()
            pool.join()
    results: dict[str, dict[int, dict]] = {name: {} for name in cells}
    jobs_list = [(s, n) for s in seeds for n in cells]
    for seed, name in tqdm(jobs_list, desc="reproduce", dynamic_ncols=True):
        results[name][seed] = run_cell(cfg, name, seed, data_seeds, out, quiet=quiet, resplit=resplit)
    from minimoe.repro_report import write_results  # tables and figures
    return write_results(cfg, results, out, seeds, data_seeds, time.perf_counter() - start, quick=quick)


def _preflight(cfg: Config, out: Path, seeds, cells, jobs: int, resplit: bool) -> None:
    """Every check that needs no training, before out/ is written: the split options, the data,
    and (if any cell is left to train) the device and the memory of the cells running at once."""
    first = seed_config(cfg, seeds[0], resplit)  # a split_seed that contradicts --resplit fails here
    suite = load_suite(first.data)
    if "oracle" in cells:  # the oracle's table needs >= 2 groups and an expert per group
        oracle_routes(suite.tasks, 1, method_config(first, "oracle").model.n_experts)
    todo = [n for s in seeds for n in cells if not cell_path(out, s, n).is_file()]
    if todo:
        runs = [method_config(seed_config(cfg, seeds[0], resplit, CELLS[n][1]), CELLS[n][0]) for n in sorted(set(todo))]
        check_memory(runs, suite.tokenizer.vocab_size, len(suite.tasks), processes=min(jobs, len(todo)))


def _same_settings(cfg: Config, out: Path) -> None:
    """A rerun into the same --out must use the same settings, or finished cells of the old
    settings would be mixed into the new tables; out/config.json remembers them."""
    def comparable(c: Config) -> Config:  # where and how fast a cell ran does not change it
        return dataclasses.replace(c, train=dataclasses.replace(c.train, device="auto", threads=1,
                                                                compile=False, out="", fs_batched=True))
    saved = out / "config.json"
    if saved.is_file():
        check_config(comparable(read_config(saved)), comparable(cfg), ignore=())
    else:
        make_out_dir(out)
        saved.write_text(cfg.to_json())
