"""A CrossFit-format folder read into a `Suite`: a minimoe export or a real CrossFit `data/`.

`load_crossfit_dir` reads every task file of a folder (the format is in `minimoe/crossfit.py`),
decides which tasks are seen (tasks.json, else CrossFit's split json, else the upstream files),
and attaches category, skill and instruction (tasks.json, else an ontology json, else "unknown"
and the task name's words). The result, a `CrossFitSuite`, answers the same calls as the
synthetic suite (`minimoe/suite.py`), so every command accepts `--data_dir`. Every file is read
and checked when the folder is loaded; whatever is missing or malformed raises DataError naming
it. Read next: `minimoe/model.py`.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

from minimoe.config import DataConfig
from minimoe.crossfit import SPLITS, check_task_names, parse_task_file_name, read_task_file, task_file_name
from minimoe.errors import DataError
from minimoe.suite import FEW_SHOT_SEEDS, Suite, build_suite
from minimoe.tasks import Example, TaskSpec
from minimoe.vocab import Tokenizer


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


def load_suite(cfg: DataConfig) -> Suite:
    """The suite a run uses: the CrossFit-format folder cfg.data_dir if set, else TinyCrossFit
    (`minimoe/suite.py::build_suite`, deterministic in cfg.data_seed)."""
    if cfg.data_dir:
        return load_crossfit_dir(cfg.data_dir, split_file=cfg.split_file or None,
                                 ontology_file=cfg.ontology_file or None)
    return build_suite(cfg)


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
        raise DataError(_not_a_folder(root))
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    meta = _task_meta(root, folders, split_file, ontology_file)
    missing: list[str] = []
    data = {name: _read_task_folder(root / name, name, info["seen"], missing) for name, info in meta.items()}
    if missing:
        raise DataError(f"{root}: {len(missing)} task files are missing: {', '.join(missing[:12])}"
                        + (" ..." if len(missing) > 12 else "") + "; restore them or drop those tasks.")
    tasks = [TaskSpec(name, info["category"], info["skill"], info["instruction"], info["seen"],
                      tuple(info["labels"]) if info.get("labels") else None, info.get("metric", "em"),
                      info.get("variant", ""), int(info.get("world", 0))) for name, info in meta.items()]
    corpus = _read_lines(root / "corpus.txt") if (root / "corpus.txt").exists() else [
        ex.input for t in tasks if t.seen for key in _file_order(t.name, data[t.name])
        for ex in data[t.name][key].get("train", [])]
    texts = [t.instruction for t in tasks] + corpus + [
        text for groups in data.values() for splits in groups.values() for exs in splits.values()
        for ex in exs for text in (ex.input, *ex.outputs)]
    return CrossFitSuite(tasks, _tokenizer(root, texts), data, corpus)


def _not_a_folder(root: Path) -> str:
    """Why --data_dir is no folder: missing, a symlink loop or a dangling link, a file, unreadable."""
    try:
        root.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return (f"data folder {root} is a loop of symbolic links (one points back to another); "
                    f"point --data_dir at the real folder.")
        if err.errno == errno.ENOENT and root.is_symlink():
            return (f"data folder {root} is a symbolic link to {os.readlink(root)}, which does not exist; "
                    f"fix the link or point --data_dir at the real folder.")
        if err.errno != errno.ENOENT:
            return f"data folder {root} cannot be read ({err.strerror}); point --data_dir at a readable folder."
        return (f"data folder {root} does not exist; export one with `minimoe data --out DIR` "
                f"or point --data_dir at a CrossFit data folder.")
    return f"--data_dir={root} is a file, not a folder; point --data_dir at the folder that holds the task folders."


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
        both = sorted(set(split["train"]) & set(split["test"]))
        if both:
            raise DataError(f"{split_file}: tasks {both[:5]} are listed both as seen ('train') and unseen "
                            f"('test'); keep each task in one of the two lists.")
        seen = {**{n: True for n in split["train"]}, **{n: False for n in split["test"]}}
    else:
        seen = {n: (root / n / task_file_name(n, None, None, "train")).exists() for n in folders}
        if not any(seen.values()):
            raise DataError(f"{root}: cannot tell seen from unseen tasks (no tasks.json, no *_upstream_train.tsv); "
                            f'pass --split_file=FILE, a JSON object {{"train": [seen task names], "test": '
                            f"[unseen task names]}} (as CrossFit's dataloader/custom_tasks_splits/random.json).")
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
