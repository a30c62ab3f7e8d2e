"""CrossFit's task-file format: read and write task files, export a suite, load a data folder.

CrossFit (Ye, Lin & Ren 2021) stores each task as `{task}/{task}_{k}_{seed}_{split}.tsv`, one
example per line, `input<TAB>output[<TAB>more acceptable outputs]`; task names contain `_` and
`-` (e.g. `ade_corpus_v2-dosage`). minimoe adds three things to a folder it exports:
`{task}/{task}_upstream_{train|dev}.tsv` (the upstream data of seen tasks), `tasks.json`
(category, skill, instruction, seen, labels, metric per task), `vocab.txt` and `corpus.txt`.
`load_crossfit_dir` reads either such an export or a real CrossFit folder (with CrossFit's split
json) into a `Suite`, so every command accepts both. Malformed files raise DataError with
file:line; nothing is skipped silently. Read next: `minimoe/model.py`.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import fields
from pathlib import Path

from minimoe.config import Config, DataConfig
from minimoe.errors import DataError
from minimoe.overrides import apply_overrides
from minimoe.suite import FEW_SHOT_SEEDS, Suite, build_suite
from minimoe.tasks import Example, TaskSpec
from minimoe.vocab import SPECIALS, Tokenizer

SPLITS = ("train", "dev", "test")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")  # a task name is also a folder name


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
                           "labels": list(task.labels) if task.labels else None, "metric": task.metric})
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
                        "rename them with letters, digits, _ - . only (no '/', no leading '.').")


class CrossFitSuite(Suite):
    """A suite read from a folder; every file is read and checked when the folder is loaded."""

    def __init__(self, tasks: list[TaskSpec], tokenizer: Tokenizer, data: dict, corpus: list[str]):
        super().__init__(tasks, tokenizer)
        self._data = data  # task → {(k, seed) | (None, None): {split: [Example]}}
        self._corpus = corpus

    def k_shot(self, name: str) -> int:
        ks = [k for k, _ in self._data[self.task(name).name] if k is not None]
        if not ks:
            raise DataError(f"task {name!r} has no {name}_{{k}}_{{seed}}_{{split}}.tsv files, so no k.")
        return ks[0]

    def corpus(self) -> list[str]:
        return list(self._corpus)

    def _upstream(self, task: TaskSpec, split: str) -> list[Example]:
        groups = self._data[task.name]
        if (None, None) in groups:  # minimoe's own upstream files
            return groups[None, None][split]
        # a real CrossFit folder: upstream = every k-shot file of the split, as CrossFit's multi-task loader
        return [ex for key in _file_order(task.name, groups) for ex in groups[key].get(split, [])]

    def _few_shot(self, task: TaskSpec, seed: int) -> dict[str, list[Example]]:
        for (_, s), splits in self._data[task.name].items():
            if s == seed:
                return splits
        raise DataError(f"task {task.name}: no few-shot files for seed {seed} "
                        f"(have seeds {sorted(s for _, s in self._data[task.name] if s is not None)}).")


def load_crossfit_dir(data_dir: str | Path, split_file: str | Path | None = None,
                      ontology_file: str | Path | None = None) -> CrossFitSuite:
    """A `Suite` over a CrossFit-format folder: a minimoe export or a real CrossFit `data/`.

    Which tasks are seen: tasks.json if present; else `split_file` (CrossFit's
    `dataloader/custom_tasks_splits/*.json`: "train" = seen, "test" = unseen, other folders
    unused); else tasks with `{task}_upstream_train.tsv` are seen. Category/skill: tasks.json,
    else `ontology_file` ({category: {skill: [tasks]}}, as CrossTaskMoE's ontology.json), else
    "unknown"; instruction: tasks.json, else the task name's words. Missing files → DataError
    naming them all. Deviations: CrossFit uses k-shot files of seen tasks as upstream data;
    minimoe's export writes larger `_upstream_` files instead (both are read).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; export one with `minimoe data --out DIR` "
                        f"or point --data_dir at a CrossFit data folder.")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    meta = _task_meta(root, folders, split_file, ontology_file)
    missing: list[str] = []
    data = {name: _read_task_folder(root / name, name, info["seen"], missing) for name, info in meta.items()}
    if missing:
        raise DataError(f"{root}: {len(missing)} task files are missing: {', '.join(missing[:12])}"
                        + (" ..." if len(missing) > 12 else "") + "; restore them or drop those tasks.")
    tasks = [TaskSpec(name, info["category"], info["skill"], info["instruction"], info["seen"],
                      tuple(info["labels"]) if info.get("labels") else None, info.get("metric", "em"),
                      info.get("variant", "")) for name, info in meta.items()]
    corpus = _read_lines(root / "corpus.txt") if (root / "corpus.txt").exists() else [
        ex.input for t in tasks if t.seen for key in _file_order(t.name, data[t.name])
        for ex in data[t.name][key].get("train", [])]
    texts = [t.instruction for t in tasks] + corpus + [
        text for groups in data.values() for splits in groups.values() for exs in splits.values()
        for ex in exs for text in (ex.input, *ex.outputs)]
    return CrossFitSuite(tasks, _tokenizer(root, texts), data, corpus)


def _file_order(task: str, groups: dict) -> list[tuple]:
    """Group keys in file-name order (`_100_` before `_13_`), the order CrossFit reads them in."""
    return sorted(groups, key=lambda key: task_file_name(task, *key, "train"))


def _task_meta(root: Path, folders: list[str], split_file, ontology_file) -> dict[str, dict]:
    """task name → {category, skill, instruction, seen, labels, metric, variant}, in tasks.json's
    order (else sorted by name)."""
    listed: dict[str, dict] = {}
    if (root / "tasks.json").exists():
        listed = _read_tasks_json(root / "tasks.json")
        check_task_names(list(listed), str(root / "tasks.json"))
        extra = sorted(set(folders) - set(listed))
        if extra:
            raise DataError(f"{root}: folders {extra[:5]} are not in tasks.json; add them there or move them out.")
        seen = {name: bool(info.get("seen")) for name, info in listed.items()}
    elif split_file:
        split = _read_json(Path(split_file))
        if not isinstance(split.get("train"), list) or not isinstance(split.get("test"), list):
            raise DataError(f"{split_file}: needs lists 'train' (seen tasks) and 'test' (unseen tasks).")
        check_task_names(split["train"] + split["test"], str(split_file))
        seen = {**{n: True for n in split["train"]}, **{n: False for n in split["test"]}}
    else:
        seen = {n: (root / n / task_file_name(n, None, None, "train")).exists() for n in folders}
        if not any(seen.values()):
            raise DataError(f"{root}: cannot tell seen from unseen tasks (no tasks.json, no *_upstream_train.tsv); "
                            f"pass --split_file (CrossFit's dataloader/custom_tasks_splits/random.json).")
    absent = sorted(set(seen) - set(folders))
    if absent:
        raise DataError(f"{root}: task folders missing: {', '.join(absent[:12])}"
                        + (" ..." if len(absent) > 12 else "") + "; download them or remove them from the split.")
    ontology = _read_ontology(Path(ontology_file)) if ontology_file else {}
    meta = {}
    for name in (list(listed) if listed else sorted(seen)):
        info = {k: v for k, v in listed.get(name, {}).items() if k != "name"}
        category, skill = ontology.get(name, ("unknown", "unknown"))
        info.setdefault("category", category)
        info.setdefault("skill", skill)
        info.setdefault("instruction", " ".join(re.split(r"[_\-\s]+", name)).strip())
        meta[name] = {**info, "seen": seen[name]}
    return meta


def _read_task_folder(folder: Path, name: str, seen: bool, missing: list[str]) -> dict:
    """{(k, seed) | (None, None): {split: [Example]}} of one task; appends missing files."""
    groups: dict[tuple, dict[str, list[Example]]] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix == ".tsv":  # other files (README, .DS_Store) are not task data
            k, seed, split = parse_task_file_name(f.name, name)
            groups.setdefault((k, seed), {})[split] = read_task_file(f)
    for (k, seed), splits in groups.items():
        missing += [f"{name}/{task_file_name(name, k, seed, s)}"
                    for s in (("train", "dev") if k is None else SPLITS) if s not in splits]
    ks = {k for k, _ in groups if k is not None}
    if len(ks) > 1:
        raise DataError(f"{folder}: files with several k {sorted(ks)}; keep one k per task.")
    have_seeds = {seed for _, seed in groups if seed is not None}
    if seen and not groups:
        missing.append(f"{name}/{task_file_name(name, None, None, 'train')}")
    if not seen:
        k = next(iter(ks), "{k}")
        missing += [f"{name}/{name}_{k}_{seed}_{s}.tsv" for seed in FEW_SHOT_SEEDS
                    if seed not in have_seeds for s in SPLITS]
    return groups


def _read_tasks_json(path: Path) -> dict[str, dict]:
    """name → entry of minimoe's tasks.json, each field type-checked (hand-edited files happen)."""
    entries = _read_json(path).get("tasks")
    if not isinstance(entries, list):
        raise DataError(f"{path}: needs \"tasks\": a list of objects with name, seen, category, ...")
    for i, e in enumerate(entries):
        ok = (isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("seen"), bool)
              and all(isinstance(e.get(f, ""), str) for f in ("category", "skill", "instruction", "variant", "metric"))
              and (e.get("labels") is None or (isinstance(e["labels"], list) and all(isinstance(x, str) for x in e["labels"]))))
        if not ok:
            raise DataError(f"{path}: task {i} is malformed ({str(e)[:80]}); it needs name (text), seen "
                            f"(true/false), text category/skill/instruction/metric and labels (list or null).")
    names = [e["name"] for e in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: tasks {repeated[:5]} are listed more than once; keep one entry per task.")
    return {e["name"]: e for e in entries}


def _read_ontology(path: Path) -> dict[str, tuple[str, str]]:
    """task → (category, skill) from {category: {skill: [tasks]}} (CrossTaskMoE's ontology.json)."""
    tree = _read_json(path)
    if not all(isinstance(skills, dict) and all(isinstance(names, list) and all(isinstance(t, str) for t in names)
                                                for names in skills.values())
               for skills in tree.values()):
        raise DataError(f"{path}: expected {{category: {{skill: [task names]}}}}.")
    return {t: (category, skill) for category, skills in tree.items() for skill, names in skills.items() for t in names}


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror}).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid UTF-8 JSON ({err}).") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object at the top level.")
    return value


def _read_lines(path: Path) -> list[str]:
    """The lines of a text file (vocab.txt, corpus.txt) without their line endings."""
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte offset {err.start}); re-save it as UTF-8.") from None
    return [line.removesuffix("\r") for line in (lines[:-1] if lines[-1] == "" else lines)]


def _tokenizer(root: Path, texts: list[str]) -> Tokenizer:
    """vocab.txt's words when present (checked against the data), else the data's words."""
    if not (root / "vocab.txt").exists():
        return Tokenizer.from_texts(texts)
    try:
        tokenizer = Tokenizer(_read_lines(root / "vocab.txt"))
    except DataError as err:
        raise DataError(f"{root / 'vocab.txt'}: {err}") from None
    unknown = sorted({w for text in texts for w in text.split()} - set(tokenizer.words))
    if unknown:
        raise DataError(f"{root / 'vocab.txt'} lacks words of the data: {unknown[:8]}; "
                        f"add them or delete vocab.txt to build the vocabulary from the data.")
    return tokenizer


def build_cli(name: str) -> argparse.ArgumentParser:
    """`minimoe data --out DIR [--data_seed=N ...]`: every DataConfig field is an option."""
    parser = argparse.ArgumentParser(prog=f"minimoe {name}",
                                     description="Export the TinyCrossFit suite in CrossFit's file format.",
                                     allow_abbrev=False)
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
