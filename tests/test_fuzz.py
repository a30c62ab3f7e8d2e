"""A seeded mutation fuzzer for CrossFit task files and folders (minimoe/crossfit.py, crossfit_suite.py).

Valid task files are mutated — truncated, tabs dropped or added, re-encoded as latin-1 or
UTF-16, NUL bytes, 1 MB lines, empty files, blank lines, CRLF or CR line endings, a byte-order
mark, random bytes — and read with `read_task_file`. Each case must either load correctly or
raise DataError naming the file; never another exception, never a hang (a per-case time budget
enforced by SIGALRM). "Correctly" means: every example has a non-blank input and non-blank
outputs without tab, newline or NUL; re-writing and re-reading the examples gives them back; and
mutations that keep the meaning (CRLF, a BOM, no final newline) give exactly the original
examples. A second fuzzer mutates whole CrossFit folders (wrong file names, missing or extra
files, bad tasks.json names) for `load_crossfit_dir`; a third damages checkpoint bytes for
`load_checkpoint` (CheckpointError or a clean load, never another exception).

Each case is seeded by its number, so a failure message names the seed and mutations that
reproduce it. The counts (loaded / rejected) are printed to the terminal.

Run: python -m pytest tests/test_fuzz.py -q            (300 files, 60 folders, 200 checkpoints: seconds)
     python -m pytest tests/test_fuzz.py -q -m slow    (10,000 files, 1,000 folders, 2,000 checkpoints)
"""

import json
import random
import shutil
import signal
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from minimoe.crossfit import read_task_file, write_task_file
from minimoe.crossfit_suite import load_crossfit_dir
from minimoe.errors import DataError
from minimoe.suite import FEW_SHOT_SEEDS

BUDGET_S = 5.0  # per case; a 1 MB line takes milliseconds, so only a hang gets near this

# Valid task files in CrossFit's format: input<TAB>output[<TAB>more outputs], UTF-8, "\n".
SEED_FILES = [
    "where does bako live ?\trome\n",
    "premise : the cat sat [SEP] hypothesis : a cat sat\tentailment\n"
    "premise : the dog ran [SEP] hypothesis : no dog ran\tcontradiction\n",
    "ade_corpus_v2-dosage : 5 mg [SEP] daily\t5 mg\t5mg\tfive mg\n",
    "naïve café – ünïcode ✓\tja\nzweite zeile mit ß\tnein\n",
    "q : who wrote it ?\tsomeone\nq : when ?\t1999\nq : where ?\there\tthere\n",
]


class Hang(BaseException):
    """A case ran past its time budget (BaseException: no `except Exception` may swallow it)."""


@contextmanager
def time_budget(seconds: float):
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- mutations of one file: (bytes, rng) -> bytes ---------------------------------------------

def _line_starts(data: bytes) -> list[int]:
    return [0] + [i + 1 for i, b in enumerate(data) if b == 0x0A]


def truncate(data, rng):
    return data[:rng.randrange(len(data) + 1)]


def drop_tab(data, rng):
    tabs = [i for i, b in enumerate(data) if b == 0x09]
    i = rng.choice(tabs) if tabs else 0
    return data[:i] + data[i + 1:] if tabs else data


def tabs_to_spaces(data, rng):
    return data.replace(b"\t", b"    ")


def extra_tab(data, rng):
    i = rng.randrange(len(data) + 1)
    return data[:i] + b"\t" + data[i:]


def latin1(data, rng):
    return data.decode("utf-8", "replace").encode("latin-1", "replace")


def utf16(data, rng):
    return data.decode("utf-8", "replace").encode(rng.choice(["utf-16", "utf-16-le", "utf-16-be"]))


def nul_byte(data, rng):
    i = rng.randrange(len(data) + 1)
    return data[:i] + b"\x00" + data[i:]


def huge_line(data, rng):
    """A 1 MB line: a valid example, one without a tab, or one with an empty output."""
    text = (b"w " * 500_000).strip()
    line = rng.choice([text + b"\tlong\n", text + b"\n", b"x\t" + text + b"\t\n"])
    starts = _line_starts(data) if data.endswith(b"\n") else [0]
    i = rng.choice(starts)
    return data[:i] + line + data[i:]


def empty(data, rng):
    return rng.choice([b"", b"\n", b"\n\n", b" ", b"\t", b"\r\n"])


def blank_line(data, rng):
    i = rng.choice(_line_starts(data))
    return data[:i] + rng.choice([b"\n", b" \n", b"\t\n"]) + data[i:]


def crlf(data, rng):
    return data.replace(b"\n", b"\r\n")


def cr_only(data, rng):
    return data.replace(b"\n", b"\r")


def bom(data, rng):
    return b"\xef\xbb\xbf" + data


def no_final_newline(data, rng):
    return data.removesuffix(b"\n")


def flip_bytes(data, rng):
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def insert_bytes(data, rng):
    i = rng.randrange(len(data) + 1)
    junk = bytes(rng.choice([0x80, 0xC3, 0xFF, 0xFE, 0x0B, 0x0C, 0x1C, 0x85, 0x0D, 0x20, 0xE2]) for _ in range(rng.randint(1, 6)))
    return data[:i] + junk + data[i:]


def blank_output(data, rng):
    lines = data.split(b"\n")
    k = rng.randrange(len(lines))
    head, sep, _ = lines[k].partition(b"\t")
    lines[k] = head + b"\t" + rng.choice([b"", b"  ", b"\xc2\xa0"]) if sep else lines[k]
    return b"\n".join(lines)


def duplicate_line(data, rng):
    lines = data.split(b"\n")
    k = rng.randrange(len(lines))
    return b"\n".join(lines[:k + 1] + lines[k:])


MUTATIONS = [truncate, drop_tab, tabs_to_spaces, extra_tab, latin1, utf16, nul_byte, huge_line, empty,
             blank_line, crlf, cr_only, bom, no_final_newline, flip_bytes, insert_bytes, blank_output,
             duplicate_line]
KEEP_MEANING = {crlf, bom, no_final_newline}  # these must load to exactly the original examples


def make_case(case: int) -> tuple[bytes, list[str], bytes]:
    """Case `case`: (original file, mutation names, mutated file); 1-3 stacked mutations."""
    rng = random.Random(case)
    original = rng.choice(SEED_FILES).encode("utf-8")
    data, names = original, []
    for mutation in rng.sample(MUTATIONS, rng.choice([1, 1, 1, 2, 3])):
        data = mutation(data, rng)
        names.append(mutation.__name__)
    return original, names, data


def check_loaded(examples, original: bytes, names: list[str], path: Path) -> None:
    """What "loaded correctly" means (see the module docstring)."""
    assert examples, "loaded an empty list"
    for ex in examples:
        assert ex.input.strip() and ex.outputs and all(o.strip() for o in ex.outputs), ex
        assert not any(c in text for text in (ex.input, *ex.outputs) for c in "\t\n\x00"), ex
    assert not examples[0].input.startswith("\ufeff"), "the byte-order mark became part of the input"
    if all(globals()[n] in KEEP_MEANING for n in names):
        path.write_bytes(original)
        assert examples == read_task_file(path), "a meaning-preserving mutation changed the examples"
    if not any("\r" in text for ex in examples for text in (ex.input, *ex.outputs)):
        write_task_file(path, examples)  # the writer refuses only what the format cannot hold
        assert read_task_file(path) == examples, "re-writing and re-reading changed the examples"


def fuzz_files(tmp_path: Path, first: int, n: int) -> Counter:
    """Run cases first .. first+n-1; return the counts; fail listing every bad case."""
    counts, failures, slowest = Counter(), [], 0.0
    path, scratch = tmp_path / "glue-rte_16_42_train.tsv", tmp_path / "scratch.tsv"
    for case in range(first, first + n):
        original, names, data = make_case(case)
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            with time_budget(BUDGET_S):
                examples = read_task_file(path)
                check_loaded(examples, original, names, scratch)
            counts["loaded"] += 1
        except DataError as err:
            counts["rejected"] += 1
            if str(path) not in str(err):
                failures.append((case, names, f"DataError does not name the file: {err}"))
        except (Exception, Hang) as err:  # noqa: BLE001 — the point: nothing else may escape
            failures.append((case, names, f"{type(err).__name__}: {str(err)[:300]}"))
        slowest = max(slowest, time.perf_counter() - start)
    counts["slowest_ms"] = round(1000 * slowest)
    assert not failures, f"{len(failures)} of {n} cases failed, e.g. " + "; ".join(map(str, failures[:5]))
    return counts


def report(capsys, what: str, n: int, counts: Counter, error: str = "DataError") -> None:
    """Print the counts to the terminal (also under pytest's output capture), to be quoted."""
    slowest = f", slowest case {counts['slowest_ms']} ms" if "slowest_ms" in counts else ""
    with capsys.disabled():
        print(f"\n[fuzz] {what}: {n} cases, loaded {counts['loaded']}, rejected with {error} "
              f"{counts['rejected']}, other exceptions 0{slowest}")


def test_fuzzed_task_files_load_or_raise_data_error(tmp_path, capsys):
    counts = fuzz_files(tmp_path, first=0, n=300)
    report(capsys, "task files", 300, counts)
    assert counts["loaded"] >= 30 and counts["rejected"] >= 100  # both outcomes are exercised


@pytest.mark.slow
def test_fuzzed_task_files_full(tmp_path, capsys):
    counts = fuzz_files(tmp_path, first=0, n=10_000)
    report(capsys, "task files", 10_000, counts)


def test_every_mutation_is_exercised_by_the_default_cases():
    used = {name for case in range(300) for name in make_case(case)[1]}
    assert used == {m.__name__ for m in MUTATIONS}


def test_meaning_preserving_mutations_load_the_original_examples(tmp_path):
    path = tmp_path / "t.tsv"
    for text in SEED_FILES:
        path.write_bytes(text.encode("utf-8"))
        expected = read_task_file(path)
        for mutation in KEEP_MEANING:
            path.write_bytes(mutation(text.encode("utf-8"), random.Random(0)))
            assert read_task_file(path) == expected, mutation.__name__


# --- folders: wrong file names, missing and extra files, bad task names ------------------------

def make_folder(root: Path) -> Path:
    """A valid CrossFit-style folder: one seen task (upstream files), one unseen task (k-shot files)."""
    write_task_file(root / "alpha_task" / "alpha_task_upstream_train.tsv", _examples("alpha", 6))
    write_task_file(root / "alpha_task" / "alpha_task_upstream_dev.tsv", _examples("alpha dev", 3))
    for seed in FEW_SHOT_SEEDS:
        for split in ("train", "dev", "test"):
            write_task_file(root / "beta-task" / f"beta-task_4_{seed}_{split}.tsv", _examples(f"beta {split}", 4))
    return root


def _examples(words: str, n: int):
    from minimoe.tasks import Example

    return [Example(f"{words} input {i}", (f"out{i % 2}",)) for i in range(n)]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def rename_file(root, rng):
    f = rng.choice(_files(root))
    new = rng.choice([f.name.replace("_dev", "_val"), f.stem + ".txt", f.name.replace("_4_", "_8_"),
                      f.name.replace("_100_", "_7_"), f.name.upper(), "x" + f.name, f.name.replace("_", "-", 1),
                      f.name.replace(".tsv", "_copy.tsv"), f.name.replace("alpha_task", "beta-task")])
    f.rename(f.with_name(new))


def remove_file(root, rng):
    rng.choice(_files(root)).unlink()


def extra_file(root, rng):
    folder = rng.choice(sorted(d for d in root.iterdir() if d.is_dir()))
    name = rng.choice(["README.md", ".DS_Store", "notes.tsv", f"{folder.name}_upstream_test.tsv"])
    (folder / name).write_bytes(rng.choice(SEED_FILES).encode())


def extra_folder(root, rng):
    (root / rng.choice(["gamma", ".git", "gamma/nested"])).mkdir(parents=True, exist_ok=True)


def rename_folder(root, rng):
    folder = rng.choice(sorted(d for d in root.iterdir() if d.is_dir()))
    folder.rename(root / (folder.name + rng.choice(["2", "_x", "-old"])))


def tasks_json(root, rng):
    names = rng.choice([["alpha_task", "beta-task"], ["../evil", "beta-task"], ["/tmp/abs", "alpha_task"],
                        ["alpha_task", "alpha_task", "beta-task"], [5, "beta-task"], ["alpha_task"]])
    tasks = [{"name": n, "seen": i == 0, "category": "c", "skill": "s", "instruction": "do it"}
             for i, n in enumerate(names)]
    (root / "tasks.json").write_text(json.dumps(rng.choice([{"tasks": tasks}, tasks, {"tasks": "x"}])))


def corrupt_content(root, rng):
    f = rng.choice(_files(root))
    f.write_bytes(rng.choice(MUTATIONS)(f.read_bytes(), rng))


FOLDER_MUTATIONS = [rename_file, remove_file, extra_file, extra_folder, rename_folder, tasks_json, corrupt_content]


def fuzz_folders(template: Path, work: Path, first: int, n: int) -> Counter:
    counts, failures = Counter(), []
    for case in range(first, first + n):
        rng = random.Random(case)
        root = work / f"case{case}"
        shutil.copytree(template, root)
        names = []
        for mutation in rng.sample(FOLDER_MUTATIONS, rng.choice([1, 1, 2])):
            mutation(root, rng)
            names.append(mutation.__name__)
        try:
            with time_budget(BUDGET_S):
                suite = load_crossfit_dir(root)
            assert suite.tasks and all((root / t.name).is_dir() for t in suite.tasks)
            for t in suite.tasks:  # whatever loaded is whole
                assert suite.upstream(t.name) if t.seen else all(suite.few_shot(t.name, s)["test"] for s in FEW_SHOT_SEEDS)
            counts["loaded"] += 1
        except DataError:
            counts["rejected"] += 1
        except (Exception, Hang) as err:  # noqa: BLE001
            failures.append((case, names, f"{type(err).__name__}: {str(err)[:300]}"))
        shutil.rmtree(root)
    assert not failures, f"{len(failures)} of {n} folder cases failed, e.g. " + "; ".join(map(str, failures[:5]))
    assert not (work.parent / "evil").exists() and not Path("/tmp/abs").exists()
    return counts


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("crossfit") / "data")
    assert [t.name for t in load_crossfit_dir(root).tasks] == ["alpha_task", "beta-task"]
    return root


# Folder loading parses file names (exercise 5.2): in a student copy it waits for that exercise.
@pytest.mark.exercise
def test_fuzzed_folders_load_or_raise_data_error(template, tmp_path, capsys):
    counts = fuzz_folders(template, tmp_path, first=0, n=60)
    report(capsys, "CrossFit folders", 60, counts)
    assert counts["loaded"] >= 5 and counts["rejected"] >= 20


@pytest.mark.slow
@pytest.mark.exercise
def test_fuzzed_folders_full(template, tmp_path, capsys):
    counts = fuzz_folders(template, tmp_path, first=0, n=1000)
    report(capsys, "CrossFit folders", 1000, counts)


# --- checkpoints: damaged bytes ----------------------------------------------------------------

def fuzz_checkpoints(tmp_path: Path, n: int) -> Counter:
    """Truncate, flip, insert or cut bytes of a real checkpoint: CheckpointError or a clean load
    (e.g. a flipped bit inside tensor data: torch keeps no checksum), never another exception."""
    import torch

    from minimoe.checkpoint import load_checkpoint, save_checkpoint
    from minimoe.errors import CheckpointError
    from minimoe.presets import PRESETS

    good = save_checkpoint(tmp_path / "good.pt", {"model": torch.nn.Linear(8, 4).state_dict(), "step": 3,
                                                  "history": [[0, 0.5]]}, PRESETS["tiny"]).read_bytes()
    counts, failures, path = Counter(), [], tmp_path / "damaged.pt"
    for case in range(n):
        rng = random.Random(case)
        data, kind = bytearray(good), rng.choice(["truncate", "flip", "insert", "cut"])
        i = rng.randrange(len(data))
        if kind == "truncate":
            data = data[:i]
        elif kind == "flip":
            for _ in range(rng.randint(1, 5)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "insert":
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 50)))
        else:
            del data[i:rng.randrange(i, len(data))]
        path.write_bytes(bytes(data))
        try:
            with time_budget(BUDGET_S):
                load_checkpoint(path)
            counts["loaded"] += 1
        except CheckpointError:
            counts["rejected"] += 1
        except (Exception, Hang) as err:  # noqa: BLE001
            failures.append((case, kind, f"{type(err).__name__}: {str(err)[:200]}"))
    assert not failures, f"{len(failures)} of {n} checkpoint cases failed, e.g. " + "; ".join(map(str, failures[:5]))
    return counts


def test_damaged_checkpoints_load_or_raise_checkpoint_error(tmp_path, capsys):
    counts = fuzz_checkpoints(tmp_path, 200)
    report(capsys, "damaged checkpoints", 200, counts, "CheckpointError")
    assert counts["rejected"] >= 150


@pytest.mark.slow
def test_damaged_checkpoints_full(tmp_path, capsys):
    counts = fuzz_checkpoints(tmp_path, 2000)
    report(capsys, "damaged checkpoints", 2000, counts, "CheckpointError")
