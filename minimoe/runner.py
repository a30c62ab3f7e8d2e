"""One end-to-end run: pre-train → upstream (one method) → evaluate → report.

Used by `python train_tiny.py` and `minimoe train`. `add_config_flags` makes one `--field=value`
option per config field (typed, with its default and reason-comment as help), so `--help` lists
everything and nothing is kept by hand in two places; `minimoe reproduce` uses the same options.

Read next: `minimoe/reproduce.py` (every method, many seeds, ARG with CIs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from minimoe.batched import few_shot_all
from minimoe.config import Config, read_config
from minimoe.crossfit_suite import load_suite
from minimoe.device import resolve_device
from minimoe.errors import ConfigError, Parser
from minimoe.evaluate import evaluate, seen_route, unseen_route, zero_shot
from minimoe.memory import check_memory
from minimoe.pipeline import METHODS, make_context, method_config, pretrain, train_upstream
from minimoe.presets import PRESETS, apply_overrides, field_help, field_index, get_preset
from minimoe.report import category_gap, route_stats, score_table, usage_table, write_figures, write_jsonl
from minimoe.snapshots import held_out_history, route_snapshot
from minimoe.train import TrainingInterrupted


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the None of config flags (their help names the preset's value)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one-line errors (the nearest option for a typo) that shows defaults."""
    return Parser(prog=prog, description=description, formatter_class=_Help)


def build_parser(prog: str, description: str, preset: str = "small") -> argparse.ArgumentParser:
    p = new_parser(prog, description)
    # Names and values are checked by minimoe (get_preset, method_config, values.coerce), whose
    # one-line errors suggest the nearest name or an example value; argparse's would not.
    p.add_argument("--preset", default=preset, help=f"base configuration: {', '.join(PRESETS)}")
    p.add_argument("--method", default="learned", help=f"routing method to train: {', '.join(METHODS)}")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return add_config_flags(p, preset)


def add_config_flags(p: argparse.ArgumentParser, preset: str, skip: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """One typed `--field=value` option per config field but those in `skip`; its help is the
    field's reason-comment and the preset's value."""
    helps, base = field_help(), PRESETS[preset]
    for name, (section, f) in field_index().items():
        if name in skip:
            continue
        default = getattr(getattr(base, section), name)
        p.add_argument(f"--{name}", default=None, metavar=type(default).__name__.upper(),
                       help=f"[{section}] {helps.get(name, '')} (default: {default!r})".replace("%", "%%"))
    return p


def given_fields(args: argparse.Namespace) -> dict:
    """{field: value} of the config options given on the command line."""
    return {k: v for k, v in vars(args).items() if k in field_index() and v is not None}


def config_from_args(args: argparse.Namespace) -> Config:
    """The preset plus every option that was given on the command line."""
    return apply_overrides(get_preset(args.preset), given_fields(args))


def _check_run_dir(run_dir: Path, cfg: Config, resume: bool) -> None:
    """Can this run use run_dir? Reads only: the folder is made once every check has passed."""
    saved = run_dir / "config.json"
    if resume:
        if not saved.is_file():
            raise ConfigError(f"--resume: {run_dir} has no config.json; start a run there first "
                              "(without --resume) or point --out at an existing run.")
        from minimoe.checkpoint import check_config
        check_config(read_config(saved), cfg)
    elif any(run_dir.glob("*.pt")):
        raise ConfigError(f"{run_dir} already holds checkpoints of another run; pass --resume to "
                          "continue it or choose a new --out.")
    elif saved.is_file():
        read_config(saved)  # a config.json that is not minimoe's is somebody's file: not overwritten


def make_out_dir(path: Path) -> Path:
    """Create an output folder, or say why it cannot be one (read-only place, a file there, ...)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out={path}: cannot create this folder ({err.strerror}); choose a "
                          "writable place, e.g. --out=runs/mine.") from None
    return path


def run(cfg: Config, method: str = "learned", resume: bool = False, quiet: bool = False,
        log=print) -> dict:
    """The whole small pipeline; returns the summary written to report.md.

    Ctrl-C inside a training loop raises `TrainingInterrupted` from `fit`; anywhere else (setting
    up, evaluating, writing the report) it is turned into one too, so the message always says how
    to resume (the finished stages are checkpointed)."""
    try:
        return _run_stages(cfg, method, resume, quiet, log)
    except KeyboardInterrupt as err:
        if isinstance(err, TrainingInterrupted):
            raise
        raise TrainingInterrupted(f"interrupted outside a training loop; every finished stage is "
                                  f"checkpointed in {cfg.train.out}. Resume by running the same "
                                  "command with --resume.") from None


def _run_stages(cfg: Config, method: str, resume: bool, quiet: bool, log) -> dict:
    start = time.perf_counter()
    run_dir = Path(cfg.train.out)
    # Every check (method, device, folder, data, memory) before the first line of output and the
    # first write: a mistake is the only line printed, and leaves no folder behind.
    method_cfg = method_config(cfg, method)
    resolve_device(cfg.train.device)
    _check_run_dir(run_dir, cfg, resume)
    suite = load_suite(cfg.data)
    check_memory([method_cfg], suite.tokenizer.vocab_size, len(suite.tasks))
    log("[minimoe] resolved config:")
    for section, values in cfg.to_dict().items():
        log(f"  {section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    make_out_dir(run_dir)
    ctx = make_context(cfg, suite, run_dir, quiet=quiet)
    ctx.track_held_out = True  # the eval curve of figures/loss.png
    (run_dir / "config.json").write_text(cfg.to_json())
    log(f"[minimoe] {len(suite.seen_tasks())} seen / {len(suite.unseen_tasks())} unseen tasks, "
        f"vocab {suite.tokenizer.vocab_size}, device {ctx.device}, run dir {run_dir}")
    t0 = time.perf_counter()
    dense = pretrain(ctx)
    t1 = time.perf_counter()
    log(f"[minimoe] pre-trained the dense base in {t1 - t0:.0f} s")
    model = train_upstream(ctx, method, dense)
    t2 = time.perf_counter()
    log(f"[minimoe] trained '{method}' on the seen tasks in {t2 - t1:.0f} s; evaluating …")
    rows, routes = evaluate_all(ctx, model, log)
    log(f"[minimoe] evaluated seen and unseen tasks in {time.perf_counter() - t2:.0f} s")
    summary = write_report(ctx, method, rows, routes, time.perf_counter() - start)
    for line in summary_lines(summary, run_dir):
        log(f"[minimoe] {line}")
    return summary


def summary_lines(summary: dict, run_dir: Path) -> list[str]:
    """What a finished run prints (3–5 lines): scores, route associations, where the report and
    figures are. The tables themselves are in report.md."""
    scores = f"seen {summary['seen_mean']:.2f} (held-out)"
    if summary.get("zero_shot_mean") is not None:
        scores += f" · unseen zero-shot {summary['zero_shot_mean']:.2f}"
    if summary.get("few_shot_mean") is not None:
        scores += f" · unseen few-shot {summary['few_shot_mean']:.2f}"
    lines = [f"done in {summary['wall_seconds']:.0f} s · mean scores (0–1): {scores}"]
    skill, cat = summary.get("routes_seen_skill"), summary.get("routes_seen")
    if skill and cat:
        lines.append(f"routes of the seen tasks, per-layer NMI: vs skills {skill['per_layer_nmi']:.2f} "
                     f"(p {skill['per_layer_nmi_p']:.3f}) · vs categories {cat['per_layer_nmi']:.2f} "
                     f"(p {cat['per_layer_nmi_p']:.3f}; p from 999 label shuffles)")
    lines.append(f"report: {run_dir / 'report.md'} (every task's score; the expert per task and layer)")
    names = ", ".join(Path(p).name for p in summary.get("figures", []))
    lines.append(f"figures: {run_dir / 'figures'}/ ({names})")
    return lines


def evaluate_all(ctx, model, log) -> tuple[list[dict], np.ndarray]:
    """Seen tasks on held-out examples; unseen tasks zero-shot, then few-shot (data seed 100): every
    unseen task's fine-tune at once (`minimoe/batched.py::few_shot_all`).

    A Fisher-routed model (`--task_repr=fisher`) routes an unseen task from labelled examples:
    its rows have no zero-shot score (`evaluate.zero_shot`), and the report says so."""
    rows = []
    routes = route_snapshot(model)  # [n l e]; unseen rows replaced by the route they get
    bar = tqdm(total=len(ctx.suite.tasks), desc="evaluate", unit="task", disable=ctx.quiet, dynamic_ncols=True,
               leave=False)
    for task in ctx.suite.seen_tasks():
        held_out = ctx.suite.held_out(task.name)
        rows.append({"task": task.name, "category": task.category, "seen": True,
                     "score": evaluate(model, ctx, task, held_out, seen_route(model, ctx, task))})
        bar.update(1)
    unseen, todo = [], []  # the unseen tasks' rows; (task, data seed, route) of their fine-tunes
    for task in ctx.suite.unseen_tasks():
        bar.set_postfix_str(f"unseen: {task.name}, route and zero-shot", refresh=False)
        split = ctx.suite.few_shot(task.name, 100)
        gates = unseen_route(model, ctx, task, split["dev"])
        if gates is not None:
            routes[ctx.task_index[task.name]] = gates.float().cpu().numpy()
        row = {"task": task.name, "category": task.category, "seen": False}
        if not model.routes_from_labels:
            row["zero_shot"] = zero_shot(model, ctx, task, gates)
        todo.append((task, 100, gates))
        unseen.append(row)
        bar.update(1)
    bar.close()
    if ctx.cfg.train.fs_steps:  # all unseen tasks' fine-tunes at once (`fs_batched`), then their test scores
        log(f"[minimoe] few-shot: fine-tuning a copy of the model per unseen task ({len(todo)}) …")
        for row, best in zip(unseen, few_shot_all(model, ctx, todo)):
            row["few_shot"] = best["test"]
    return rows + unseen, routes


def write_report(ctx, method: str, rows: list[dict], routes: np.ndarray, wall: float) -> dict:
    names = [t.name for t in ctx.suite.tasks]
    cats = [t.category for t in ctx.suite.tasks]
    seen = [t.seen for t in ctx.suite.tasks]
    run_dir = ctx.run_dir
    np.save(run_dir / "routes.npy", routes)
    records = [{"stage": s, "step": st, "loss": lo} for s, h in ctx.histories.items() for st, lo in h]
    write_jsonl(run_dir / "metrics.jsonl", records + [dict(r, kind="score") for r in rows])
    figures = write_figures(run_dir, method, ctx.histories, routes, names, cats, seen, held_out_history(run_dir))
    seen_rows = [r for r in rows if r["seen"]]
    unseen_rows = [r for r in rows if not r["seen"]]
    summary = {"method": method, "wall_seconds": wall,
               "seen_mean": float(np.mean([r["score"] for r in seen_rows])),
               "zero_shot_mean": float(np.mean([r["zero_shot"] for r in unseen_rows]))
               if unseen_rows and "zero_shot" in unseen_rows[0] else None}
    if unseen_rows and "few_shot" in unseen_rows[0]:
        summary["few_shot_mean"] = float(np.mean([r["few_shot"] for r in unseen_rows]))
    gap = category_gap([c for c, s in zip(cats, seen) if s])
    if routes.size and gap:
        summary["routes_seen_unavailable"] = gap
    elif routes.size:
        idx = [i for i, s in enumerate(seen) if s]
        summary["routes_seen"] = route_stats(routes[idx], [cats[i] for i in idx], n_perm=999)
        # The two-level ontology: routes may follow sub-skills more than categories.
        skills = [t.skill for t in ctx.suite.tasks]
        summary["routes_seen_skill"] = route_stats(routes[idx], [skills[i] for i in idx], n_perm=999)
    no_zero = (["No zero-shot scores: task_repr=fisher routes an unseen task from its labelled few-shot "
                "examples.", ""] if unseen_rows and "zero_shot" not in unseen_rows[0] else [])
    lines = [f"# minimoe run — method `{method}`", "",
             f"Wall time {wall:.0f} s on {ctx.device}. Config: `config.json`.", "",
             "## Seen tasks (held-out examples)", "", score_table(seen_rows, ["score"]), "",
             "## Unseen tasks", "", *no_zero, score_table(unseen_rows, [c for c in ("zero_shot", "few_shot")
                                                              if unseen_rows and c in unseen_rows[0]]), "",
             "## Summary", "", "```json", json.dumps(summary, indent=2), "```"]
    if routes.size:
        lines += ["", "## Expert usage per task and layer (* = unseen)", "",
                  usage_table(routes, names, cats, seen), "",
                  "![routes](figures/routes.png)"]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["figures"] = [str(p) for p in figures]
    return summary


def build_cli(name: str) -> argparse.ArgumentParser:
    """`minimoe train`: the same options as train_tiny.py."""
    return build_parser(f"minimoe {name}", "one end-to-end run: pre-train, upstream, evaluate, report")


def cli_main(name: str, args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    run(cfg, method=args.method, resume=args.resume, quiet=args.quiet)  # ends with the summary
    return 0
