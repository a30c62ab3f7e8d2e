"""A catalogue of user mistakes: each one gets minimoe's own error, naming the problem and the fix.

Every row below is one test case (the id is the pytest id): the error type listed is raised,
and its message contains an excerpt naming the problem and one saying what to do. "run as":
`in` = a library call; `cli` = a command line (`python train_tiny.py ...`, `python -m minimoe
...`) run in-process through the same entry point, which must return 2 with one line
`error: <problem + fix>` (for L1 that line alone, from `errors.Parser`); `cli+proc` = also run as a real
process, with no traceback (with -m slow: each process imports torch). A command line that
fails writes nothing: every file and folder it was given is as it was, and no output folder
appears. lessons/troubleshooting.md lists the same rows for users (a test checks that every id
is there).

| id | mistake                                                    | run as   | error           | what you see (excerpt)                                                          | what to do                                                   |
|----|------------------------------------------------------------|----------|-----------------|---------------------------------------------------------------------------------|--------------------------------------------------------------|
| C1 | a typo in a config key (`--d_modle=64`)                    | in       | ConfigError     | unknown config key 'd_modle'; did you mean 'd_model'?                           | use the suggested name                                       |
| C2 | text where a number belongs (`--steps=ten`)                | in       | ConfigError     | --steps='ten' is not a valid int; e.g. --steps=20                               | give a number                                                |
| C3 | `d_model` not divisible by `n_heads`                       | in       | ConfigError     | d_model=48 is not divisible by n_heads=5; choose n_heads among [...]            | pick one of the listed head counts                           |
| C4 | a temperature <= 0 (`--tau0=0`)                            | in       | ConfigError     | tau0=0.0 must be > 0                                                            | use a positive temperature                                   |
| C5 | top-k larger than the number of experts                    | in       | ConfigError     | random_top_k=3 > n_experts=2; use --random_top_k between 1 and 2                | lower top-k or add experts                                   |
| C6 | dense routing with several experts                         | in       | ConfigError     | routing='dense' needs n_experts=1 (got 3); set --n_experts=1                    | set `--n_experts=1` or pick another routing                  |
| C7 | a key in the wrong section (`--data.d_model=48`)           | in       | ConfigError     | d_model is in section 'model', not 'data'                                       | write `--model.d_model` or just `--d_model`                  |
| C8 | a hand-edited config.json with a wrong type                | in       | ConfigError     | config.json: d_model=[64] has type list, but d_model must be int                | fix the file, or start a new `--out`                         |
| C9 | an unknown device name (`--device=gpu`)                    | in       | ConfigError     | device='gpu' is not auto, cpu, cuda or cuda:N                                   | `--device=auto`, `cpu` or `cuda:0`                           |
| L1 | a typo in a command-line flag (a prefix: `--n_expert`)    | cli+proc | usage error     | unrecognized arguments: --d_modle=64; did you mean 'd_model'?                   | use the suggested flag; `--help` lists all                   |
| L2 | `--n_heads` that does not divide `d_model`                 | cli+proc | ConfigError     | d_model=64 is not divisible by n_heads=5; choose n_heads among [1, 2, 4, 8, 16] | pick one of the listed head counts                           |
| L3 | `--resume` where no run was started                        | cli      | ConfigError     | --resume: runs/x has no config.json                                             | drop `--resume`, or point `--out` at the run                 |
| L4 | a new run into a used `--out`                              | cli      | ConfigError     | runs/x already holds checkpoints of another run                                 | pass `--resume`, or choose a new `--out`                     |
| L5 | an `--out` that cannot be created                          | cli      | ConfigError     | --out=...: cannot create this folder (Not a directory)                          | choose a writable place, e.g. `--out=runs/mine`              |
| L6 | `reproduce --seeds` with a non-number                      | cli+proc | ConfigError     | --seeds '0,one' must be comma-separated integers                                | e.g. `--seeds 0,1,2`                                         |
| L7 | `reproduce --cells` with a typo                            | cli      | ConfigError     | unknown cells ['lerned']; did you mean 'learned'?                               | use the suggested cell                                       |
| L8 | `reproduce --preset` with a typo                           | cli      | ConfigError     | unknown preset 'smal'; did you mean 'small'?                                    | use the suggested preset                                     |
| L9 | `reproduce` rerun into an `--out` made with other settings | cli      | CheckpointError | another config — train.steps: checkpoint 99 vs now 20                           | the same settings, or a new `--out`                          |
| L10 | `reproduce --jobs` below 0                                | cli      | ConfigError     | --jobs=-1 must be >= 0 (0 = one process per CPU core)                           | `--jobs 0` (auto) or a positive count                        |
| L11 | `reproduce --resplit` with a fixed `split_seed`             | cli      | ConfigError     | --resplit draws a split per upstream seed, but split_seed=3 fixes one           | drop `--set split_seed` or drop `--resplit`                  |
| L12 | text for a number on the command line (`--n_experts=three`) | cli      | ConfigError     | --n_experts='three' is not a valid int; e.g. --n_experts=3                       | give a number                                                |
| L13 | `--method` with a typo (`--method=twostage`)               | cli      | ConfigError     | unknown method 'twostage'; did you mean 'two_stage'?                            | use the suggested method                                     |
| L14 | a new run into an `--out` whose config.json is not JSON    | cli      | ConfigError     | .../config.json is not valid JSON (...)                                         | fix or move the file, or choose a new `--out`                |
| L15 | `bench --study` with fewer than 2 upstream steps           | cli      | ConfigError     | --study_steps=1 must be >= 2 (two_stage trains two stages)                      | use --study_steps=2 or more                                  |
| D1 | `--device=cuda` on a machine without CUDA                  | cli+proc | DeviceError     | --device=cuda was requested but this machine has no CUDA device                 | `--device=cpu` or `--device=auto`                            |
| D2 | a model too large for memory (`--d_model=1000000000`)      | cli+proc | ConfigError     | training needs about 5.8e+11 GiB (parameters ..., optimizer state ..., activations ...) but cpu has 22 GiB free | lower `--d_model`, `--d_ff`, `--n_experts`, `--max_len`, `--batch_size` |
| T1 | an unknown task name                                       | in       | DataError       | unknown task 'recal_pet-frist'; nearest: recall_pet-first, ...                  | use one of the nearest names                                 |
| T2 | a task name that is a path (`../evil`) in tasks.json       | in       | DataError       | task names ['../evil'] are not plain folder names                               | rename it: ASCII letters, digits, `_ - . @`                  |
| P1 | a `--data_dir` that does not exist                         | cli      | DataError       | data folder ... does not exist                                                  | `minimoe data --out DIR`, or fix the path                    |
| P2 | a CrossFit folder with a missing split file                | in       | DataError       | 1 task files are missing: beta-task/beta-task_4_42_dev.tsv                      | restore them, or drop those tasks                            |
| P3 | `minimoe data --out` into a non-empty folder               | cli+proc | DataError       | ... exists and is not an empty folder                                           | choose a new `--out`, or delete it                           |
| P4 | `--split_file` without `--data_dir`                        | in       | ConfigError     | split_file and ontology_file describe a CrossFit folder                         | set `--data_dir` too                                         |
| P5 | a split file listing a task as both seen and unseen        | cli      | DataError       | split.json: tasks ['beta-task'] are listed both as seen ('train') and unseen ('test') | keep each task in one of the two lists                 |
| P6 | a `--data_dir` that is a loop of symbolic links            | cli      | DataError       | data folder ... is a loop of symbolic links                                     | point `--data_dir` at the real folder                        |
| P7 | a CrossFit folder that does not say which tasks are seen   | in       | DataError       | cannot tell seen from unseen tasks                                              | `--split_file`: `{"train": [seen], "test": [unseen]}`        |
| F1 | a task-file line without a tab                             | in       | DataError       | file.tsv:2: no tab                                                              | each line is `input<TAB>output[<TAB>more outputs]`           |
| F2 | a task file saved as latin-1                               | in       | DataError       | file.tsv:1: not UTF-8 (byte 0xe9 at column 4)                                   | re-save the file as UTF-8                                    |
| F3 | a stray tab at the end of a line                           | in       | DataError       | file.tsv:1: output 2 is empty (a stray or trailing tab?)                        | remove the stray tab                                         |
| K1 | `--resume` with another model config                       | cli+proc | CheckpointError | model.d_ff: checkpoint 64 vs now 128                                            | the same settings, or a new `--out`                          |
| K2 | a foreign file where a checkpoint belongs                  | in       | CheckpointError | c.pt is not a minimoe checkpoint (no config inside)                             | point `--out` at a minimoe run folder, or move the file away |
| K3 | a truncated (corrupt) checkpoint                           | in       | CheckpointError | checkpoint c.pt is corrupt or truncated                                         | delete it and resume from an earlier one, or retrain         |
| K4 | a checkpoint from another minimoe version                  | in       | CheckpointError | c.pt holds a config this version of minimoe cannot read                         | retrain, or load it with that version                        |
| K5 | weights that do not fit the model                          | in       | CheckpointError | checkpoint c.pt does not fit this model (shape mismatch ...)                    | the same preset and overrides as the run that wrote it       |
| K6 | a checkpoint path that does not exist                      | in       | CheckpointError | no checkpoint at ...                                                            | check the path, or train first                               |
| E1 | `make-student` into a non-empty folder                     | cli+proc | ExerciseError   | ... is not empty; choose a new folder or pass --force                           | a new folder, or `--force`                                   |
| E2 | `grade --only` with an unknown exercise                    | cli+proc | ExerciseError   | unknown exercise(s) ['ex9_9']; choose from ex1_1, ...                           | use one of the listed ids                                    |
| E3 | `make-student` into the project itself                     | in       | ExerciseError   | ... would overwrite the reference code                                          | pick a folder outside the project                            |
| E4 | a malformed exercise marker (`# begin exercise 3.2`)       | in       | ExerciseError   | lesson.py:2: malformed exercise marker                                          | `# BEGIN EXERCISE L.N: title` ... `# END EXERCISE L.N`       |

Below the catalogue: an unknown category (a CrossFit folder without an ontology) is no error:
the report says why routes are not compared with categories, and an ontology added later
reuses the trained cells. Memory is estimated before a model is built (`minimoe/memory.py`).

Run: python -m pytest tests/test_bad_inputs.py -q          (2 tiny trainings)
     python -m pytest tests/test_bad_inputs.py -q -m slow  (the cli+proc rows as real processes)
"""

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from minimoe.checkpoint import check_config, load_checkpoint, load_model_state, save_checkpoint
from minimoe.classroom import make_student
from minimoe.grading import grade
from minimoe.cli import COMMANDS
from minimoe.cli import main as minimoe_main
from minimoe.config import Config, RouterConfig, read_config
from minimoe.crossfit import read_task_file, write_task_file
from minimoe.crossfit_suite import load_crossfit_dir, load_suite
from minimoe.device import resolve_device
from minimoe.errors import CheckpointError, ConfigError, DataError, DeviceError, MinimoeError
from minimoe.exercises import ExerciseError, strip_source
from minimoe.memory import check_memory, estimate
from minimoe.pipeline import method_config
from minimoe.presets import PRESETS, apply_overrides, get_preset
from minimoe.report import route_stats
from minimoe.reproduce_cli import QUICK
from minimoe.suite import FEW_SHOT_SEEDS, build_suite
from minimoe.tasks import Example

ROOT = Path(__file__).resolve().parent.parent
TINY = PRESETS["tiny"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
HAS_CUDA = torch.cuda.is_available()


@dataclass(frozen=True)
class Mistake:
    """One row of the catalogue: `problem` and `fix` are excerpts the message must contain."""

    id: str
    error: type | None  # None: argparse's usage error (exit 2), raised before minimoe runs
    problem: str
    fix: str
    trigger: Callable[[Path], object] | None = None  # in-process: raises `error`
    argv: Callable[[Path], list[str]] | None = None  # cli: the command's arguments
    spawn: bool = True  # cli: also run as a subprocess (each costs ~2.5 s of CPU importing torch)


def expect(mistake: Mistake, message: str) -> None:
    """The message names the problem and says what to do."""
    assert mistake.problem in message, f"{mistake.id}: problem {mistake.problem!r} not in: {message}"
    assert mistake.fix in message, f"{mistake.id}: fix {mistake.fix!r} not in: {message}"


# --- setups ----------------------------------------------------------------------------------

def over(*args):
    return lambda d: apply_overrides(TINY, list(args))


def bad_config_json(d: Path):
    path = d / "config.json"
    path.write_text(json.dumps({"model": {"d_model": [64]}}))
    return read_config(path)


def crossfit_folder(d: Path, drop: str | None = None, seen=("alpha",)) -> Path:
    """A tiny valid CrossFit folder (the seen tasks, one unseen task), minus the file `drop`."""
    root = d / "data"
    ex = [Example(f"input {i}", ("yes" if i % 2 else "no",)) for i in range(4)]
    for task in seen:
        for split in ("train", "dev"):
            write_task_file(root / task / f"{task}_upstream_{split}.tsv", ex)
    for seed in FEW_SHOT_SEEDS:
        for split in ("train", "dev", "test"):
            write_task_file(root / "beta-task" / f"beta-task_4_{seed}_{split}.tsv", ex)
    if drop:
        (root / drop).unlink()
    return root


def split_both_ways(d: Path) -> list[str]:
    """--set options: a CrossFit folder and a split file listing beta-task as seen and unseen."""
    split = d / "split.json"
    split.write_text(json.dumps({"train": ["alpha", "beta-task"], "test": ["beta-task"]}))
    return [f"data_dir={crossfit_folder(d)}", f"split_file={split}"]


def no_split_folder(d: Path) -> Path:
    """A CrossFit folder of k-shot files only: no tasks.json, no upstream files."""
    root = crossfit_folder(d)
    shutil.rmtree(root / "alpha")
    return root


def symlink_loop(d: Path) -> Path:
    (d / "loop_a").symlink_to(d / "loop_b")
    (d / "loop_b").symlink_to(d / "loop_a")
    return d / "loop_a"


def not_json_run(d: Path) -> Path:
    (d / "run").mkdir()
    (d / "run" / "config.json").write_text("settings of another program {")
    return d / "run"


def path_task_name(d: Path):
    root = crossfit_folder(d)
    tasks = [{"name": n, "seen": n == "alpha", "category": "c", "skill": "s", "instruction": "i"}
             for n in ("alpha", "beta-task", "../evil")]
    (root / "tasks.json").write_text(json.dumps({"tasks": tasks}))
    return load_crossfit_dir(root)


def task_file(d: Path, content: bytes) -> Path:
    path = d / "file.tsv"
    path.write_bytes(content)
    return path


def checkpoint(d: Path, payload) -> Path:
    path = d / "c.pt"
    torch.save(payload, path)
    return path


def truncated_checkpoint(d: Path):
    path = save_checkpoint(d / "c.pt", {"model": torch.nn.Linear(4, 4).state_dict()}, TINY)
    path.write_bytes(path.read_bytes()[:300])
    return load_checkpoint(path)


def other_version_checkpoint(d: Path):
    old = json.loads(TINY.to_json())
    old["model"]["n_expert_layers"] = 2  # a field this version does not know
    return load_checkpoint(checkpoint(d, {"config_json": json.dumps(old), "model": {}}))


def run_dir(d: Path, cfg: Config = TINY, checkpoint_file: bool = False) -> Path:
    """A run folder as a first run leaves it: config.json (and a checkpoint)."""
    out = d / "run"
    out.mkdir()
    (out / "config.json").write_text(cfg.to_json())
    if checkpoint_file:
        (out / "pretrain.pt").write_bytes(b"x")
    return out


def non_empty(d: Path) -> Path:
    (d / "full").mkdir()
    (d / "full" / "keep.txt").write_text("mine")
    return d / "full"


def reproduce_dir_of_other_settings(d: Path) -> Path:
    out = d / "rep"
    out.mkdir()
    (out / "config.json").write_text(apply_overrides(get_preset("tiny"), dict(QUICK, steps=99)).to_json())
    return out


def a_file(d: Path) -> Path:
    (d / "taken").write_text("a file, not a folder")
    return d / "taken"


TRAIN = ["train_tiny.py", "--preset=tiny", "--quiet"]
MINIMOE = ["-m", "minimoe"]
REPRODUCE = [*MINIMOE, "reproduce", "--quick", "--preset=tiny", "--seeds", "0", "--data_seeds", "100"]

CATALOGUE = [
    # config keys and values
    Mistake("C1", ConfigError, "unknown config key 'd_modle'", "did you mean 'd_model'?", over("--d_modle=64")),
    Mistake("C2", ConfigError, "--steps='ten' is not a valid int", "e.g. --steps=20", over("--steps=ten")),
    Mistake("C3", ConfigError, "d_model=48 is not divisible by n_heads=5", "choose n_heads among [1, 2, 3, 4, 6, 8, 12, 16]",
            over("--d_model=48", "--n_heads=5")),
    Mistake("C4", ConfigError, "tau0=0.0", "must be > 0", over("--tau0=0")),
    Mistake("C5", ConfigError, "random_top_k=3 > n_experts=2", "use --random_top_k between 1 and 2",
            over("--n_experts=2", "--random_top_k=3")),
    Mistake("C6", ConfigError, "routing='dense' needs n_experts=1", "set --n_experts=1", over("--routing=dense")),
    Mistake("C7", ConfigError, "d_model is in section 'model', not 'data'", "write --model.d_model or just --d_model",
            over("--data.d_model=48")),
    Mistake("C8", ConfigError, "d_model=[64] has type list, but d_model must be int", "fix the file, or start a new --out",
            bad_config_json),
    Mistake("C9", ConfigError, "device='gpu' is not auto, cpu, cuda or cuda:N", "set --device=auto", over("--device=gpu")),
    # command-line flags
    Mistake("L1", None, "unrecognized arguments: --d_modle=64", "did you mean 'd_model'?",
            argv=lambda d: [*TRAIN, "--d_modle=64"]),
    Mistake("L2", ConfigError, "d_model=64 is not divisible by n_heads=5", "choose n_heads among [1, 2, 4, 8, 16]",
            argv=lambda d: ["train_tiny.py", "--n_heads=5"]),
    Mistake("L3", ConfigError, "has no config.json", "start a run there first (without --resume)",
            argv=lambda d: [*TRAIN, "--resume", f"--out={d / 'new'}"], spawn=False),
    Mistake("L4", ConfigError, "already holds checkpoints of another run", "pass --resume to continue it or choose a new --out",
            argv=lambda d: [*TRAIN, f"--out={run_dir(d, checkpoint_file=True)}"], spawn=False),
    Mistake("L5", ConfigError, "cannot create this folder", "choose a writable place",
            argv=lambda d: [*TRAIN, f"--out={a_file(d) / 'run'}"], spawn=False),
    Mistake("L6", ConfigError, "--seeds '0,one' must be comma-separated integers", "e.g. --seeds 0,1,2",
            argv=lambda d: [*REPRODUCE, "--seeds", "0,one", "--out", str(d / "rep")]),
    Mistake("L7", ConfigError, "unknown cells ['lerned']", "did you mean 'learned'?",
            argv=lambda d: [*REPRODUCE, "--cells", "dense,lerned", "--out", str(d / "rep")], spawn=False),
    Mistake("L8", ConfigError, "unknown preset 'smal'", "did you mean 'small'?",
            argv=lambda d: [*MINIMOE, "reproduce", "--preset=smal", "--out", str(d / "rep")], spawn=False),
    Mistake("L9", CheckpointError, "train.steps: checkpoint 99 vs now 20", "Resume with the same settings, or start a new --out",
            argv=lambda d: [*REPRODUCE, "--cells", "dense", "--out", str(reproduce_dir_of_other_settings(d))], spawn=False),
    Mistake("L10", ConfigError, "--jobs=-1 must be >= 0", "0 = one process per CPU core",
            argv=lambda d: [*REPRODUCE, "--jobs", "-1", "--out", str(d / "rep")], spawn=False),
    Mistake("L11", ConfigError, "--resplit draws a split per upstream seed, but split_seed=3 fixes one",
            "drop --set split_seed or drop --resplit",
            argv=lambda d: [*REPRODUCE, "--resplit", "--set", "split_seed=3", "--out", str(d / "rep")], spawn=False),
    Mistake("L12", ConfigError, "--n_experts='three' is not a valid int", "e.g. --n_experts=3",
            argv=lambda d: [*TRAIN, "--n_experts=three", f"--out={d / 'run'}"], spawn=False),
    Mistake("L13", ConfigError, "unknown method 'twostage'", "did you mean 'two_stage'?",
            argv=lambda d: [*TRAIN, "--method=twostage", f"--out={d / 'run'}"], spawn=False),
    Mistake("L14", ConfigError, "config.json is not valid JSON", "fix or move the file, or choose a new --out",
            argv=lambda d: [*TRAIN, f"--out={not_json_run(d)}"], spawn=False),
    Mistake("L15", ConfigError, "--study_steps=1 must be >= 2", "use --study_steps=2 or more",
            argv=lambda d: [*MINIMOE, "bench", "--study", "--study_steps", "1"], spawn=False),
    # devices
    Mistake("D1", DeviceError, "--device=cuda was requested but this machine has no CUDA device",
            "Use --device=cpu or --device=auto", lambda d: resolve_device("cuda"),
            argv=lambda d: [*TRAIN, "--device=cuda", f"--out={d / 'run'}"]),
    Mistake("D2", ConfigError, "training needs about 5.81e+11 GiB (parameters", "lower --d_model, --d_ff",
            lambda d: check_memory([method_config(over("--d_model=1000000000")(d), "learned")], 100, 2),
            argv=lambda d: [*TRAIN, "--d_model=1000000000", f"--out={d / 'run'}"]),
    # task names
    Mistake("T1", DataError, "unknown task 'recal_pet-frist'", "nearest: recall_pet-first",
            lambda d: build_suite(TINY.data).task("recal_pet-frist")),
    Mistake("T2", DataError, "task names ['../evil'] are not plain folder names", "rename them with ASCII letters, digits, _ - . @",
            path_task_name),
    # data directories
    Mistake("P1", DataError, "does not exist", "export one with `minimoe data --out DIR`",
            lambda d: load_suite(apply_overrides(TINY, {"data_dir": str(d / "nope")}).data),
            argv=lambda d: [*TRAIN, f"--data_dir={d / 'nope'}", f"--out={d / 'run'}"], spawn=False),
    Mistake("P2", DataError, "1 task files are missing: beta-task/beta-task_4_42_dev.tsv", "restore them or drop those tasks",
            lambda d: load_crossfit_dir(crossfit_folder(d, drop="beta-task/beta-task_4_42_dev.tsv"))),
    Mistake("P3", DataError, "exists and is not an empty folder", "choose a new --out or delete it",
            argv=lambda d: [*MINIMOE, "data", "--out", str(non_empty(d))]),
    Mistake("P4", ConfigError, "split_file and ontology_file describe a CrossFit folder", "set --data_dir too",
            over("--split_file=splits/random.json")),
    Mistake("P5", DataError, "tasks ['beta-task'] are listed both as seen ('train') and unseen ('test')",
            "keep each task in one of the two lists",
            argv=lambda d: [*REPRODUCE, "--out", str(d / "rep"), "--set", *split_both_ways(d)], spawn=False),
    Mistake("P6", DataError, "is a loop of symbolic links", "point --data_dir at the real folder",
            lambda d: load_crossfit_dir(symlink_loop(d)),
            argv=lambda d: [*TRAIN, f"--data_dir={symlink_loop(d)}", f"--out={d / 'run'}"], spawn=False),
    Mistake("P7", DataError, "cannot tell seen from unseen tasks",
            'pass --split_file=FILE, a JSON object {"train": [seen task names], "test": [unseen task names]}',
            lambda d: load_crossfit_dir(no_split_folder(d))),
    # task files
    Mistake("F1", DataError, "file.tsv:2: no tab", "a line must be input<TAB>output",
            lambda d: read_task_file(task_file(d, b"fine\tyes\nno tab here\n"))),
    Mistake("F2", DataError, "file.tsv:1: not UTF-8 (byte 0xe9 at column 4)", "re-save the file as UTF-8",
            lambda d: read_task_file(task_file(d, "café\toui\n".encode("latin-1")))),
    Mistake("F3", DataError, "file.tsv:1: output 2 is empty", "a stray or trailing tab",
            lambda d: read_task_file(task_file(d, b"input\tyes\t\n"))),
    # checkpoints
    Mistake("K1", CheckpointError, "model.d_ff: checkpoint 64 vs now 128", "Resume with the same settings, or start a new --out",
            lambda d: check_config(TINY, apply_overrides(TINY, ["--d_ff=128"])),
            argv=lambda d: [*TRAIN, "--d_ff=128", "--resume", f"--out={run_dir(d)}"]),
    Mistake("K2", CheckpointError, "is not a minimoe checkpoint (no config inside)", "point --out at a run directory",
            lambda d: load_checkpoint(checkpoint(d, {"weight": torch.ones(2)}))),
    Mistake("K3", CheckpointError, "is corrupt or truncated", "delete it and resume from an earlier one, or retrain",
            truncated_checkpoint),
    Mistake("K4", CheckpointError, "holds a config this version of minimoe cannot read", "retrain, or load it with that version",
            other_version_checkpoint),
    Mistake("K5", CheckpointError, "does not fit this model (shape mismatch", "use the same preset and overrides",
            lambda d: load_model_state(torch.nn.Linear(4, 3), torch.nn.Linear(5, 3).state_dict(), "c.pt")),
    Mistake("K6", CheckpointError, "no checkpoint at", "check the path or train first",
            lambda d: load_checkpoint(d / "missing.pt")),
    # lesson / exercise commands
    Mistake("E1", ExerciseError, "is not empty", "choose a new folder or pass --force",
            lambda d: make_student(ROOT, non_empty(d)),
            argv=lambda d: [*MINIMOE, "make-student", str(non_empty(d)), "--root", str(ROOT)]),
    Mistake("E2", ExerciseError, "unknown exercise(s) ['ex9_9']", "choose from ex1_1",
            lambda d: grade(ROOT, d / "g.json", only=["ex9_9"]),
            argv=lambda d: [*MINIMOE, "grade", "--root", str(ROOT), "--only", "ex9_9"]),
    Mistake("E3", ExerciseError, "would overwrite the reference code", "pick a folder outside it",
            lambda d: make_student(ROOT, ROOT / "minimoe" / "student")),
    Mistake("E4", ExerciseError, "lesson.py:2: malformed exercise marker", "# BEGIN EXERCISE L.N: title",
            lambda d: strip_source("def f():\n    # begin exercise 3.2\n    return 1\n", "lesson.py")),
]
BY_ID = {m.id: m for m in CATALOGUE}
IN_PROCESS = [m for m in CATALOGUE if m.trigger is not None]
CLI = [m for m in CATALOGUE if m.argv is not None]
SPAWNED = [m for m in CLI if m.spawn]


# Rows whose check runs exercise code (P2 parses task file names: exercise 5.2); in a student
# copy they wait for that exercise, like every test marked `exercise`.
USES_EXERCISES = {"P2"}


def row(mistake: Mistake):
    marks = [pytest.mark.skipif(mistake.id == "D1" and HAS_CUDA,
                                reason="this machine has CUDA: --device=cuda is not a mistake here")]
    return pytest.param(mistake, id=mistake.id, marks=marks + [pytest.mark.exercise] * (mistake.id in USES_EXERCISES))


def test_catalogue_is_large_and_ids_are_unique():
    assert len(BY_ID) == len(CATALOGUE) >= 15
    assert {m.id[0] for m in CATALOGUE} >= set("CLDTPFKE")  # every kind of mistake is covered


@pytest.mark.parametrize("mistake", [row(m) for m in IN_PROCESS])
def test_mistake_raises_minimoe_error_naming_problem_and_fix(mistake, tmp_path):
    assert issubclass(mistake.error, MinimoeError)
    with pytest.raises(mistake.error) as info:
        mistake.trigger(tmp_path)
    expect(mistake, str(info.value))


def snapshot(d: Path) -> dict[str, str]:
    """Every path under d → its content's hash (files), its target (links) or "dir"."""
    out = {}
    for folder, dirs, files in os.walk(d):
        for name in dirs + files:
            path = Path(folder) / name
            out[str(path.relative_to(d))] = (f"-> {os.readlink(path)}" if path.is_symlink() else "dir"
                                             if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Every cli+proc row as a subprocess, four at a time (each one imports torch: seconds of CPU);
    with the snapshot of its folder before and after."""
    def one(mistake: Mistake):
        d = folders[mistake.id]
        argv = mistake.argv(d)  # sets up d (a used run folder, a non-empty folder, ...)
        before = snapshot(d)
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT if argv[0] == "train_tiny.py" else d,
                              env=ENV, capture_output=True, text=True, timeout=180)
        return mistake.id, (proc, before, snapshot(d))

    todo = [m for m in SPAWNED if not (m.id == "D1" and HAS_CUDA)]
    # Made here, not in the threads: pytest's temp-folder factory is not thread-safe.
    folders = {m.id: tmp_path_factory.mktemp(m.id) for m in todo}
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, todo))


def expect_one_line(mistake: Mistake, stderr: str) -> None:
    """No traceback; the last line names problem and fix in minimoe's form ("error: ..."); a usage
    error (errors.Parser) prints that line alone, no usage dump above it."""
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    expect(mistake, last)
    assert last.startswith("error: "), last
    if mistake.error is None:
        assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("mistake", [row(m) for m in SPAWNED])
def test_cli_mistake_exits_2_with_one_clear_line(mistake, cli_runs):
    proc, before, after = cli_runs[mistake.id]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    expect_one_line(mistake, proc.stderr)
    assert after == before  # nothing written, nothing lost


def entry_point(argv: list[str]) -> int:
    """Run a command line in-process through the `main` a shell would run; its exit code."""
    try:
        if argv[0] == "train_tiny.py":
            spec = importlib.util.spec_from_file_location("train_tiny", ROOT / "train_tiny.py")
            script = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(script)
            return script.main(argv[1:])
        return minimoe_main(argv[2:])
    except SystemExit as stop:  # argparse's usage error
        return stop.code


def command(argv: list[str]) -> None:
    """The same command line one level below `main`, where minimoe's error propagates."""
    from minimoe.runner import build_parser, config_from_args, run

    if argv[0] == "train_tiny.py":
        args = build_parser("train_tiny.py", "").parse_args(argv[1:])
        run(config_from_args(args), method=args.method, resume=args.resume, quiet=True, log=lambda *a: None)
    else:
        name, rest = argv[2], argv[3:]
        module = importlib.import_module(COMMANDS[name][0])
        module.cli_main(name, module.build_cli(name).parse_args(rest))


@pytest.mark.parametrize("mistake", [row(m) for m in CLI])
def test_cli_mistake_returns_2_with_one_line_and_writes_nothing(mistake, tmp_path, capsys):
    """In-process, every cli row: exit code 2, one line, its folder untouched (no empty --out left
    behind, no file overwritten); one level down it raises the catalogue's error type."""
    d = tmp_path / "main"
    d.mkdir()
    argv = mistake.argv(d)
    before = snapshot(d)
    assert entry_point(argv) == 2
    expect_one_line(mistake, capsys.readouterr().err)
    assert snapshot(d) == before
    if mistake.error is not None:
        d = tmp_path / "raised"
        d.mkdir()
        with pytest.raises(mistake.error) as info:
            command(mistake.argv(d))
        expect(mistake, str(info.value))


def table_rows(text: str) -> dict[str, list[str]]:
    """id -> cells of every markdown table row whose first cell is a catalogue id."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.lstrip().startswith("|")]
    return {r[0]: r for r in rows if r[0] in BY_ID}


def test_docstring_table_matches_the_catalogue():
    rows = table_rows(__doc__)
    assert set(rows) == set(BY_ID)
    for m in CATALOGUE:
        run_as = "in" if m.argv is None else "cli+proc" if m.spawn else "cli"
        error = m.error.__name__ if m.error else "usage error"
        assert rows[m.id][2:4] == [run_as, error], (m.id, rows[m.id][2:4], [run_as, error])


def test_troubleshooting_page_lists_every_row():
    page = (ROOT / "lessons" / "troubleshooting.md").read_text(encoding="utf-8")
    assert "# Troubleshooting" in page
    rows = table_rows(page.split("# Troubleshooting", 1)[1])
    assert set(rows) == set(BY_ID), f"lessons/troubleshooting.md lacks rows {sorted(set(BY_ID) - set(rows))}"
    doc = table_rows(__doc__)
    assert all(rows[i][1] == doc[i][1] and rows[i][-1] == doc[i][-1] for i in BY_ID)  # same mistake, same fix


# --- no error: categories unknown, an ontology added later, memory that nearly fits ------------

SEEN = ("alpha", "gamma", "delta", "eps")  # with beta-task unseen: two categories of two seen tasks
ONTOLOGY = {"c1": {"s1": ["alpha", "gamma"], "s3": ["beta-task"]}, "c2": {"s2": ["delta", "eps"]}}
SMALLEST = ["steps=4", "pretrain_steps=2", "fs_steps=1"]


@pytest.mark.exercise  # trains a tiny model
def test_reproduce_without_ontology_reports_and_an_added_ontology_reuses_the_cells(tmp_path, capsys):
    root, out = crossfit_folder(tmp_path, seen=SEEN), tmp_path / "rep"
    argv = ["reproduce", "--quick", "--preset=tiny", "--seeds", "0", "--data_seeds", "100", "--cells",
            "learned_emb", "--jobs", "1", "--out", str(out), "--set", *SMALLEST, f"data_dir={root}"]
    assert minimoe_main(argv) == 0
    report = (out / "report.md").read_text()
    assert "Unavailable: every task's category is 'unknown'" in report and "set ontology_file" in report
    assert "every task's category is 'unknown'" in json.loads((out / "results.json").read_text())["route_stats_unavailable"]
    trained = {k: v for k, v in snapshot(out).items() if k.startswith("seed0")}
    (tmp_path / "ontology.json").write_text(json.dumps(ONTOLOGY))
    assert minimoe_main([*argv, f"ontology_file={tmp_path / 'ontology.json'}"]) == 0
    assert {k: v for k, v in snapshot(out).items() if k.startswith("seed0")} == trained  # reused, not retrained
    results = json.loads((out / "results.json").read_text())
    assert "route_stats_unavailable" not in results and 0 < results["route_stats"]["learned_emb"]["per_layer_nmi_p"] <= 1
    assert "| learned_emb |" in (out / "report.md").read_text()
    capsys.readouterr()


@pytest.mark.exercise  # trains a tiny model
def test_train_without_ontology_reports_and_resumes_with_one(tmp_path):
    from minimoe.runner import run

    root, out = crossfit_folder(tmp_path, seen=SEEN), tmp_path / "run"
    cfg = apply_overrides(TINY, [f"--{s}" for s in SMALLEST] + [f"--data_dir={root}", f"--out={out}"])
    summary = run(cfg, "learned", quiet=True, log=lambda *a: None)
    assert "every task's category is 'unknown'" in summary["routes_seen_unavailable"] and "routes_seen" not in summary
    assert "routes_seen_unavailable" in (out / "report.md").read_text()
    (tmp_path / "ontology.json").write_text(json.dumps(ONTOLOGY))
    cfg = apply_overrides(cfg, {"ontology_file": str(tmp_path / "ontology.json")})
    summary = run(cfg, "learned", resume=True, quiet=True, log=lambda *a: None)  # not refused: analysis only
    assert "routes_seen_unavailable" not in summary and 0 < summary["routes_seen"]["per_layer_nmi_p"] <= 1


@pytest.mark.exercise  # permutation tests (exercise 8.2)
def test_skills_that_cannot_move_between_categories_give_no_skill_p():
    """An ontology whose categories' skills all differ in size: the skill-level null has one draw
    (permutation.DegenerateNull), so its p is None ("–" in the report), not a crash after training."""
    routes = np.eye(2)[[0, 0, 0, 1, 1]][:, None, :]  # [n=5 l=1 e=2]
    st = route_stats(routes, ["a", "a", "a", "b", "b"], n_perm=9, blocks=["s1", "s1", "s1", "s2", "s2"])
    assert st["per_layer_nmi_p_blocks"] is None and 0 < st["per_layer_nmi_p"] <= 1


def test_memory_estimate_counts_the_real_parameters_and_nearly_fitting_runs_are_refused(monkeypatch):
    import minimoe.memory as memory
    from minimoe.model import TaskMoETransformer

    cfg = method_config(TINY, "learned")
    need = estimate(cfg, vocab_size=100, n_tasks=3)
    dense = TaskMoETransformer(dataclasses.replace(method_config(TINY, "dense").model, vocab_size=100),
                               RouterConfig(routing="dense"), 1)
    routed = TaskMoETransformer(dataclasses.replace(cfg.model, vocab_size=100), cfg.router, 3)
    numbers = lambda m: sum(t.numel() for t in (*m.parameters(), *m.buffers()))  # noqa: E731
    assert need["parameters"] == 4 * (numbers(dense) + numbers(routed))
    assert need["optimizer"] == 4 * 3 * numbers(routed)  # gradients and AdamW's two moments
    doubled = estimate(apply_overrides(cfg, {"batch_size": 2 * cfg.train.batch_size}), 100, 3)
    assert doubled["activations"] == 2 * need["activations"]
    monkeypatch.setattr(memory, "available_bytes", lambda device: need["total"] * 3 // 2)
    check_memory([cfg], 100, 3)  # fits once
    with pytest.raises(ConfigError, match=r"× 2 processes at once .* lower --d_model.*--jobs"):
        check_memory([cfg], 100, 3, processes=2)


def test_a_flag_prefix_is_a_typo_not_an_abbreviation(capsys):
    """argparse would read --n_expert as --n_experts; errors.Parser refuses it, in one line."""
    from minimoe.runner import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser("train_tiny.py", "").parse_args(["--n_expert=4"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: unrecognized arguments: --n_expert=4; did you mean 'n_experts'? "
                                       "(train_tiny.py --help lists every option)\n")
