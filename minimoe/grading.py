"""Grading: run each exercise's tests, give partial credit, and grade against the teacher's tests.

    minimoe grade                          the exercises of this folder, with its own tests
    minimoe grade --reference REF          protected: REF's tests/ and pytest settings, in a copy
    minimoe grade --class A B ... --reference REF --csv class.csv    one CSV row per student

An exercise earns points × (tests passed / tests run) of its `pytest -m exL_N` run (skipped
tests do not count), so an exercise with several independent tests gives partial credit.
Protected grading never runs the student's tests or settings: it builds a temporary folder
from REF (tests/, pyproject.toml, lessons/ with points.json, ...) plus the student's minimoe/
only, and grades that. The student's folder is only read. What it cannot stop is code that the
student's package itself runs on import; read the student's minimoe/ diff for that.
Not from the paper: teaching infrastructure (lessons/teacher/README.md, "Grade"). Read next:
`minimoe/classroom.py` (the student copy and the command line).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from minimoe.exercises import ExerciseError, find_exercises, marker
from minimoe.interrupt import children_stopped, run_child

POINTS = Path("lessons/points.json")
NESTED_ENV = "MINIMOE_CLASSROOM_RUN"  # set in every pytest we spawn, so tests can avoid recursion
FIELDS = ["id", "marker", "title", "points", "max_points", "passed", "tests", "status", "exit_code"]


def load_points(root: Path | str, ids: list[str]) -> dict[str, int]:
    """Points per exercise id from root/lessons/points.json (id -> positive int); 1 if not listed."""
    path, table = Path(root) / POINTS, {}
    if path.exists():
        table = json.loads(path.read_text(encoding="utf-8"))
    unknown = sorted(set(table) - set(ids))
    if unknown:
        raise ExerciseError(f"{POINTS} lists {unknown}, which no exercise region defines; "
                            f"remove them or use one of {ids}")
    bad = {k: v for k, v in table.items() if type(v) is not int or v <= 0}
    if bad:
        raise ExerciseError(f"{POINTS}: points must be positive integers; fix {bad}")
    return {ex_id: table.get(ex_id, 1) for ex_id in ids}


def run_pytest(root: Path | str, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """`python -m pytest ARGS` in root with this interpreter, importing root's own minimoe
    (PYTHONPATH first, even if another copy is installed); stdout and stderr together. An
    interrupted `grade` stops the run and the processes its tests started (`children_stopped`)."""
    env = dict(os.environ, **{NESTED_ENV: "1"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return run_child([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], timeout, cwd=root,
                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# What a student copy is made of (`minimoe make-student`): these entries; everything else (.git,
# runs/, .venv, ...) and the teacher pack stay behind.
TEACHER = Path("lessons/teacher")  # the teacher pack: never in a student copy
COPIED = ("minimoe", "lessons", "tests", ".ci", "train_tiny.py", "pyproject.toml", "README.md", ".gitignore")
# Study checkpoints stay behind too (lessons/results/**/pretrain.pt and seed*/work/, git-ignored):
# gigabytes, and files that a study running in the checkout replaces while the copy is made.
_IGNORED_NAMES = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache",
                                        "*.pyc", "*.pt", "*.pt.tmp*")


def IGNORED(folder: str, names: list[str]) -> set[str]:  # noqa: N802 (a copytree `ignore`, like ignore_patterns)
    """Names in `folder` a student copy leaves out: `_IGNORED_NAMES`, `work/` inside a study's
    `seed*/`, and the teacher pack `lessons/teacher/` (answer keys, grading procedure)."""
    study_seed = Path(folder).name.startswith("seed")
    teacher = {TEACHER.name} & set(names) if Path(folder).name == TEACHER.parent.name else set()
    return set(_IGNORED_NAMES(folder, names)) | ({"work"} & set(names) if study_seed else set()) | teacher


def protected_copy(student: Path | str, reference: Path | str, dest: Path | str) -> Path:
    """dest = the reference's project files (tests/, pyproject.toml, lessons/, ...) with the
    student's minimoe/ in place of the reference's: the tests, conftest, pytest settings and
    points are the teacher's, the code under test the student's. Reads `student`, writes `dest`."""
    student, reference, dest = Path(student), Path(reference), Path(dest)
    for root, what in ((student, "student"), (reference, "reference")):
        if not (root / "minimoe").is_dir():
            raise ExerciseError(f"no minimoe/ package in the {what} folder {root}; pass the project root")
    if not (reference / "tests").is_dir():
        raise ExerciseError(f"no tests/ in the reference folder {reference}; pass the teacher's checkout")
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = student / name if name == "minimoe" else reference / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=IGNORED)
        elif source.is_file():
            shutil.copy2(source, dest / name)
    return dest


def _counts(report: Path) -> tuple[int, int]:
    """(passed, counted) from a JUnit XML report; skipped tests are not counted."""
    if not report.exists():
        return 0, 0
    passed = counted = 0
    for suite in ET.parse(report).getroot().iter("testsuite"):
        tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        counted += tests - skipped
        passed += tests - skipped - failed
    return passed, counted


def _grade_one(root: Path, ex_id: str, title: str, max_points: int, timeout: float) -> dict:
    """Run one exercise's tests: points × the fraction of its (not skipped) tests that passed."""
    with tempfile.TemporaryDirectory(prefix="minimoe-grade-") as tmp:
        report = Path(tmp) / "junit.xml"
        try:
            proc = run_pytest(root, ["-q", "-m", marker(ex_id), f"--junitxml={report}"], timeout)
            code, output = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired:
            code, output = None, ""
        passed, counted = _counts(report) if code is not None else (0, 0)
    earned = max_points * passed / counted if counted and code in (0, 1) else 0
    earned = int(earned) if earned == int(earned) else round(earned, 2)  # 2, not 2.0, in the CSV
    return dict(id=ex_id, marker=marker(ex_id), title=title, points=earned, max_points=max_points, passed=passed,
                tests=counted, status=_status(code, output, ex_id, passed, counted), exit_code=code)


def _status(code: int | None, output: str, ex_id: str, passed: int, counted: int) -> str:
    """A one-line verdict for the report: why the exercise got the points it got."""
    if code == 0:
        return "passed"
    if code is None:
        return "timed out"
    if code == 5:  # pytest's "no tests collected": a marker typo must not look like a failure
        return f"no tests carry marker {marker(ex_id)}"
    if code == 1 and passed:
        return f"{passed}/{counted} tests passed"
    if f"NotImplementedError: exercise {ex_id}" in output:
        return "not implemented yet"
    return "tests failed" if code == 1 else f"pytest error (exit {code}): run pytest -m {marker(ex_id)}"


def grade(root: Path | str = ".", out_json: Path | str | None = None, out_csv: Path | str | None = None,
          only: list[str] | None = None, jobs: int = 1, timeout: float = 600.0,
          reference: Path | str | None = None, quiet: bool = False) -> dict:
    """Grade every exercise (or those in `only`: ids "3.2" or markers "ex3_2"), one pytest run
    each; print a table and write JSON/CSV where paths are given. With `reference`, grade a
    `protected_copy` of root against the reference's tests (exercises and points from it too).
    Returns {"total", "max_total", "exercises": [{id, marker, title, points, max_points, passed,
    tests, status, exit_code}]}."""
    root = Path(root).resolve()
    if reference is not None:
        with tempfile.TemporaryDirectory(prefix="minimoe-protected-") as tmp:
            graded = protected_copy(root, Path(reference).resolve(), Path(tmp) / "graded")
            exercises = find_exercises(Path(reference))
            return _grade_in(graded, exercises, load_points(reference, list(exercises)), out_json, out_csv,
                             only, jobs, timeout, quiet)
    exercises = find_exercises(root)
    return _grade_in(root, exercises, load_points(root, list(exercises)), out_json, out_csv, only, jobs, timeout, quiet)


def _grade_in(root: Path, exercises: dict, points: dict[str, int], out_json, out_csv, only, jobs: int,
              timeout: float, quiet: bool) -> dict:
    """`grade` once the folder to run in, its exercises and their points are fixed."""
    by_marker = {marker(i): i for i in exercises}
    chosen = [by_marker.get(name, name) for name in only] if only else list(exercises)
    unknown = [name for name in chosen if name not in exercises]
    if unknown:
        raise ExerciseError(f"unknown exercise(s) {unknown}; choose from {', '.join(by_marker)}")
    # Threads: each waits on a subprocess. Ctrl-C or SIGTERM stops the pytest runs, so the pool can end.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, children_stopped():
        futures = [pool.submit(_grade_one, root, i, exercises[i][0].title, points[i], timeout) for i in chosen]
        bar = tqdm(as_completed(futures), total=len(futures), desc="grading", unit="exercise",
                   dynamic_ncols=True, leave=False)
        for done in bar:  # one pytest run per exercise: a minute or two for all of them
            row = done.result()
            bar.set_postfix_str(f"{row['marker']}: {row['status']}")
    rows = [future.result() for future in futures]  # in the order chosen
    total = round(sum(r["points"] for r in rows), 2)
    result = dict(total=total, max_total=sum(r["max_points"] for r in rows), exercises=rows)
    if not quiet:
        _print_table(result)
    _write(result, out_json, out_csv)
    return result


def _print_table(result: dict) -> None:
    print(f"{'exercise':<9} {'title':<44} {'points':>9}  status")
    for row in result["exercises"]:
        print(f"{row['marker']:<9} {row['title'][:44]:<44} {row['points']:>5g}/{row['max_points']:<3}  {row['status']}")
    print(f"{'total':<9} {'':<44} {result['total']:>5g}/{result['max_total']:<3}")


def _write(result: dict, out_json: Path | str | None, out_csv: Path | str | None) -> None:
    """Write the report as JSON and as CSV (one row per exercise)."""
    for path in filter(None, (out_json, out_csv)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if out_json:
        Path(out_json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if out_csv:
        with open(out_csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(result["exercises"])


def grade_class(students: list[Path | str], reference: Path | str, out_csv: Path | str,
                only: list[str] | None = None, jobs: int = 1, timeout: float = 600.0) -> list[dict]:
    """Protected grading of every student folder; one CSV row per student: student (the
    folder's name), the points of each exercise (by marker), total, max_total."""
    names = [Path(s).resolve().name for s in students]
    if len(set(names)) != len(names):
        raise ExerciseError(f"two student folders share a name in {names}; give each its own folder name")
    rows = []
    for name, folder in zip(names, students):
        result = grade(folder, only=only, reference=reference, jobs=jobs, timeout=timeout, quiet=True)
        rows.append(dict(student=name, **{r["marker"]: r["points"] for r in result["exercises"]},
                         total=result["total"], max_total=result["max_total"]))
        print(f"{name}: {result['total']:g}/{result['max_total']}")
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["student", "total", "max_total"])
        writer.writeheader()
        writer.writerows(rows)
    return rows
