"""CrossFit's task-file format: read and write task files, export a suite (`minimoe data`).

CrossFit (Ye, Lin & Ren 2021) stores each task as `{task}/{task}_{k}_{seed}_{split}.tsv`, one
example per line, `input<TAB>output[<TAB>more acceptable outputs]`; task names contain `_` and
`-` (e.g. `ade_corpus_v2-dosage`). minimoe adds three things to a folder it exports:
`{task}/{task}_upstream_{train|dev}.tsv` (the upstream data of seen tasks), `tasks.json`
(category, skill, instruction, seen, labels, metric per task), `vocab.txt` and `corpus.txt`.
Malformed files raise DataError with file:line; nothing is skipped silently.
Read next: `minimoe/crossfit_suite.py` (a folder of such files, read back into a `Suite`).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import fields
from pathlib import Path

from minimoe.config import Config, DataConfig
from minimoe.errors import DataError, Parser
from minimoe.presets import apply_overrides
from minimoe.suite import FEW_SHOT_SEEDS, Suite, build_suite
from minimoe.tasks import Example
from minimoe.vocab import SPECIALS

SPLITS = ("train", "dev", "test")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]*$")  # a task name is also a folder name


def parse_task_line(line: str, where: str) -> Example:
    """One line of a task file (its line ending already removed) → Example; `where` is file:line."""
    if "\x00" in line:
        raise DataError(f"{where}: NUL byte in the line; the file is binary or corrupt.")
    fields = line.split("\t")
    if len(fields) < 2:
        raise DataError(f"{where}: no tab; a line must be input<TAB>output[<TAB>more outputs].")
    if not fields[0].strip():
        raise DataError(f"{where}: empty input before the first tab.")
    for i, output in enumerate(fields[1:], start=1):
        if not output.strip():
            raise DataError(f"{where}: output {i} is empty (a stray or trailing tab?).")
    return Example(fields[0], tuple(fields[1:]))


def read_task_file(path: str | Path) -> list[Example]:
    """Every example of a task file; DataError with file:line on the first malformed line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror}).") from None
    # A UTF-8 byte-order mark (Windows editors add one) is not part of the first input.
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if lines[-1] == b"":  # the newline that ends the last line
        lines.pop()
    if not lines:
        raise DataError(f"{path}: empty task file; it needs at least one input<TAB>output line.")
    examples = []
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{number}: not UTF-8 (byte {raw[err.start]:#04x} at column "
                            f"{err.start + 1}); re-save the file as UTF-8.") from None
        examples.append(parse_task_line(line.removesuffix("\r"), f"{path}:{number}"))
    return examples


def write_task_file(path: str | Path, examples: list[Example]) -> None:
    """Write examples one per line, `input<TAB>output[<TAB>...]`, UTF-8, "\\n" line endings."""
    lines = []
    for i, ex in enumerate(examples):
        for text in (ex.input, *ex.outputs):
            if not text.strip() or any(c in text for c in "\t\n\r\x00"):
                raise DataError(f"{path}: example {i} has an empty field or a tab/newline/NUL "
                                f"({text!r}); the TSV format cannot hold it.")
        lines.append("\t".join((ex.input, *ex.outputs)) + "\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(lines), encoding="utf-8", newline="\n")


def task_file_name(task: str, k: int | None, seed: int | None, split: str) -> str:
    """`{task}_{k}_{seed}_{split}.tsv`, or `{task}_upstream_{split}.tsv` when k is None."""
    return f"{task}_upstream_{split}.tsv" if k is None else f"{task}_{k}_{seed}_{split}.tsv"


def parse_task_file_name(file_name: str, task: str) -> tuple[int | None, int | None, str]:
    """Inverse of `task_file_name`: (k, seed, split), with k = seed = None for upstream files.

    Task names may contain "_" (`ade_corpus_v2-dosage_16_42_dev.tsv`), so the task's folder name
    is stripped first; what is left is `{k}_{seed}_{split}` or `upstream_{split}`.
    """
    # BEGIN EXERCISE 5.2: parse a task file name
    # HINT: strip the prefix f"{task}_" and the suffix ".tsv"; splitting the whole name on "_" breaks
    # HINT: upstream files have splits train/dev; few-shot files train/dev/test; k and seed are digits
    expected = f"expected {task}_{{k}}_{{seed}}_{{train|dev|test}}.tsv or {task}_upstream_{{train|dev}}.tsv"
    if not (file_name.startswith(task + "_") and file_name.endswith(".tsv")):
        raise DataError(f"{task}/{file_name}: not a file of task {task!r}; {expected}.")
    parts = file_name[len(task) + 1:-len(".tsv")].split("_")
    if len(parts) == 2 and parts[0] == "upstream" and parts[1] in ("train", "dev"):
        return None, None, parts[1]
    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and parts[2] in SPLITS:
        return int(parts[0]), int(parts[1]), parts[2]
    raise DataError(f"{task}/{file_name}: unrecognised task file name; {expected}.")
    # END EXERCISE 5.2


def export_suite(suite: Suite, out_dir: str | Path) -> Path:
    """Write a suite in CrossFit's format (plus tasks.json, vocab.txt, corpus.txt); deterministic.

    Unseen tasks: `{task}/{task}_{k}_{seed}_{split}.tsv` for the five seeds; seen tasks:
    `{task}/{task}_upstream_{train|dev}.tsv`. out_dir must be new or empty (no stale files).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder; choose a new --out or delete it.")
    check_task_names([t.name for t in suite.tasks], "the suite")  # before anything is written
    meta = []
    for task in suite.tasks:
        meta.append({"name": task.name, "category": task.category, "skill": task.skill, "variant": task.variant,
                           "instruction": task.instruction, "seen": task.seen,
                           "labels": list(task.labels) if task.labels else None, "metric": task.metric,
                           "world": task.world})
        folder = out / task.name
        if task.seen:
            for split in ("train", "dev"):
                write_task_file(folder / task_file_name(task.name, None, None, split), suite.upstream(task.name, split))
        else:
            for seed in FEW_SHOT_SEEDS:
                for split, examples in suite.few_shot(task.name, seed).items():
                    write_task_file(folder / task_file_name(task.name, suite.k_shot(task.name), seed, split), examples)
    (out / "tasks.json").write_text(json.dumps({"tasks": meta}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "vocab.txt").write_text("".join(w + "\n" for w in suite.tokenizer.words[len(SPECIALS):]), encoding="utf-8")
    (out / "corpus.txt").write_text("".join(s + "\n" for s in suite.corpus()), encoding="utf-8")
    return out


def check_task_names(names: list, where: str) -> None:
    """Every task name must be a plain folder name: a name such as "../x" or "/tmp/x" would read or
    write outside the data folder. DataError naming the bad ones."""
    bad = [n for n in names if not (isinstance(n, str) and SAFE_NAME.match(n))]
    if bad:
        raise DataError(f"{where}: task names {[str(n) for n in bad[:5]]} are not plain folder names; "
                        "rename them with ASCII letters, digits, _ - . @ only, starting with a letter or digit "
                        "(no '/', no spaces, no accents).")


def build_cli(name: str) -> argparse.ArgumentParser:
    """`minimoe data --out DIR [--data_seed=N ...]`: every DataConfig field is an option."""
    parser = Parser(prog=f"minimoe {name}",
                    description="Export the TinyCrossFit suite in CrossFit's file format.")
    parser.add_argument("--out", required=True, help="a new or empty folder to write the suite into")
    for f in fields(DataConfig):
        parser.add_argument(f"--{f.name}", default=None, metavar=type(f.default).__name__.upper(),
                            help=f"(default: {f.default!r})")
    return parser


def cli_main(name: str, args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k != "out" and v is not None}
    suite = build_suite(apply_overrides(Config(), overrides).data)
    out = export_suite(suite, args.out)
    print(f"wrote {len(suite.seen_tasks())} seen and {len(suite.unseen_tasks())} unseen tasks to {out}")
    return 0
