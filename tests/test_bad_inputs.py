"""A catalogue of user mistakes: each one gets minimoe's own error, naming the problem and the fix.

Every row below is one test case (the id is the pytest id): the error type listed is raised,
and its message contains an excerpt naming the problem and one saying what to do. "run as":
`in` = a library call; `cli` = a command line (`python train_tiny.py ...`, `python -m minimoe
...`) run in-process through the same entry point; `cli+proc` = also run as a real process,
which must exit 2 with one line `error: <problem + fix>` (argparse's usage line for L1) and no
traceback. lessons/troubleshooting.md lists the same rows for users (a test checks that every id
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
| L1 | a typo in a command-line flag                              | cli+proc | usage error     | unrecognized arguments: --d_modle=64; did you mean 'd_model'?                   | use the suggested flag; `--help` lists all                   |
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
| D1 | `--device=cuda` on a machine without CUDA                  | cli+proc | DeviceError     | --device=cuda was requested but this machine has no CUDA device                 | `--device=cpu` or `--device=auto`                            |
| T1 | an unknown task name                                       | in       | DataError       | unknown task 'recal_pet-frist'; nearest: recall_pet-first, ...                  | use one of the nearest names                                 |
| T2 | a task name that is a path (`../evil`) in tasks.json       | in       | DataError       | task names ['../evil'] are not plain folder names                               | rename it: letters, digits, `_ - . @`                        |
| P1 | a `--data_dir` that does not exist                         | cli      | DataError       | data folder ... does not exist                                                  | `minimoe data --out DIR`, or fix the path                    |
| P2 | a CrossFit folder with a missing split file                | in       | DataError       | 1 task files are missing: beta-task/beta-task_4_42_dev.tsv                      | restore them, or drop those tasks                            |
| P3 | `minimoe data --out` into a non-empty folder               | cli+proc | DataError       | ... exists and is not an empty folder                                           | choose a new `--out`, or delete it                           |
| P4 | `--split_file` without `--data_dir`                        | in       | ConfigError     | split_file and ontology_file describe a CrossFit folder                         | set `--data_dir` too                                         |
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

Run: python -m pytest tests/test_bad_inputs.py -q     (~10 s: 8 subprocesses, 5 of them import torch)
"""

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from minimoe.checkpoint import check_config, load_checkpoint, load_model_state, save_checkpoint
from minimoe.classroom import grade, make_student
from minimoe.config import Config, read_config
from minimoe.crossfit import read_task_file, write_task_file
from minimoe.crossfit_suite import load_crossfit_dir
from minimoe.device import resolve_device
from minimoe.errors import CheckpointError, ConfigError, DataError, DeviceError, MinimoeError
from minimoe.exercises import ExerciseError, strip_source
from minimoe.overrides import apply_overrides
from minimoe.presets import PRESETS, get_preset
from minimoe.reproduce import QUICK
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


def crossfit_folder(d: Path, drop: str | None = None) -> Path:
    """A tiny valid CrossFit folder (one seen, one unseen task), minus the file `drop`."""
    root = d / "data"
    ex = [Example(f"input {i}", ("yes" if i % 2 else "no",)) for i in range(4)]
    for split in ("train", "dev"):
        write_task_file(root / "alpha" / f"alpha_upstream_{split}.tsv", ex)
    for seed in FEW_SHOT_SEEDS:
        for split in ("train", "dev", "test"):
            write_task_file(root / "beta-task" / f"beta-task_4_{seed}_{split}.tsv", ex)
    if drop:
        (root / drop).unlink()
    return root


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
    # devices
    Mistake("D1", DeviceError, "--device=cuda was requested but this machine has no CUDA device",
            "Use --device=cpu or --device=auto", lambda d: resolve_device("cuda"),
            argv=lambda d: [*TRAIN, "--device=cuda", f"--out={d / 'run'}"]),
    # task names
    Mistake("T1", DataError, "unknown task 'recal_pet-frist'", "nearest: recall_pet-first",
            lambda d: build_suite(TINY.data).task("recal_pet-frist")),
    Mistake("T2", DataError, "task names ['../evil'] are not plain folder names", "rename them with letters, digits, _ - . @",
            path_task_name),
    # data directories
    Mistake("P1", DataError, "does not exist", "export one with `minimoe data --out DIR`",
            lambda d: build_suite(apply_overrides(TINY, {"data_dir": str(d / "nope")}).data),
            argv=lambda d: [*TRAIN, f"--data_dir={d / 'nope'}", f"--out={d / 'run'}"], spawn=False),
    Mistake("P2", DataError, "1 task files are missing: beta-task/beta-task_4_42_dev.tsv", "restore them or drop those tasks",
            lambda d: load_crossfit_dir(crossfit_folder(d, drop="beta-task/beta-task_4_42_dev.tsv"))),
    Mistake("P3", DataError, "exists and is not an empty folder", "choose a new --out or delete it",
            argv=lambda d: [*MINIMOE, "data", "--out", str(non_empty(d))]),
    Mistake("P4", ConfigError, "split_file and ontology_file describe a CrossFit folder", "set --data_dir too",
            over("--split_file=splits/random.json")),
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


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Every cli row as a subprocess, four at a time (each one imports torch: seconds of CPU)."""
    def one(mistake: Mistake):
        d = tmp_path_factory.mktemp(mistake.id)
        argv = mistake.argv(d)  # sets up d (a used run folder, a non-empty folder, ...)
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT if argv[0] == "train_tiny.py" else d,
                              env=ENV, capture_output=True, text=True, timeout=180)
        return mistake.id, proc

    todo = [m for m in SPAWNED if not (m.id == "D1" and HAS_CUDA)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, todo))


@pytest.mark.parametrize("mistake", [row(m) for m in SPAWNED])
def test_cli_mistake_exits_2_with_one_clear_line(mistake, cli_runs):
    proc = cli_runs[mistake.id]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    expect(mistake, last)
    # minimoe's own errors print "error: ..." (cli.py, train_tiny.py); argparse's say "prog: error: ...".
    assert last.startswith("error: ") if mistake.error else re.match(r"\S+( \w+)?: error: ", last), last


def test_cli_rows_that_fail_before_training_raise_their_type_in_process(tmp_path):
    """The cli rows without an in-process trigger: the same arguments, called in-process, raise
    the catalogue's error type (so the exit code 2 really comes from a minimoe error)."""
    from minimoe.reproduce import build_cli as reproduce_cli, cli_main as reproduce_main
    from minimoe.runner import build_parser, config_from_args, run

    for mistake in CLI:
        if mistake.trigger is not None or mistake.error is None:
            continue
        d = tmp_path / mistake.id
        d.mkdir()
        argv = mistake.argv(d)
        with pytest.raises(mistake.error) as info:
            if argv[0] == "train_tiny.py":
                args = build_parser("train_tiny.py", "").parse_args(argv[1:])
                run(config_from_args(args), method=args.method, resume=args.resume, quiet=True, log=lambda *a: None)
            elif argv[2] == "reproduce":
                reproduce_main("reproduce", reproduce_cli("reproduce").parse_args(argv[3:]))
            else:  # minimoe data
                from minimoe.crossfit import build_cli, cli_main
                cli_main("data", build_cli("data").parse_args(argv[3:]))
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
