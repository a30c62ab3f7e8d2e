"""Classroom tooling: hand out a student copy with the exercises stubbed out, and grade it.

An exercise is a region of reference code inside a function, marked by `BEGIN EXERCISE L.N:
title` and `END EXERCISE L.N` comments (`minimoe/exercises.py` finds and strips them); its
tests carry the pytest marker `exL_N`.

    minimoe make-student OUT     copy the project, replacing every region's code with
                                 raise NotImplementedError("exercise L.N") (hints stay)
    minimoe grade                run `pytest -m exL_N` per exercise; points from
                                 lessons/points.json (1 point for an id not listed)

Nothing is listed by hand: exercises are found by scanning minimoe/, so a new region is
picked up by the stripper, the grader and the generated GitHub Classroom workflow at once.
Not from the paper: this is teaching infrastructure (lessons/TEACHING.md). Read next:
lessons/TEACHING.md, and tests/test_classroom.py for the invariants checked in CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from minimoe.exercises import ExerciseError, Region, find_exercises, marker, strip_source
from minimoe.interrupt import children_stopped, run_child

WORKFLOW = Path(".github/workflows/classroom.yml")
POINTS = Path("lessons/points.json")
NESTED_ENV = "MINIMOE_CLASSROOM_RUN"  # set in every pytest we spawn, so tests can avoid recursion

# What a student copy contains; everything else (.git, runs/, .venv, ...) stays behind.
COPIED = ("minimoe", "lessons", "tests", ".ci", "train_tiny.py", "pyproject.toml", "README.md", ".gitignore")
# Study checkpoints stay behind too (lessons/results/**/pretrain.pt and seed*/work/, git-ignored):
# gigabytes, and files that a study running in the checkout replaces while the copy is made.
_IGNORED_NAMES = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache",
                                        "*.pyc", "*.pt", "*.pt.tmp*")


def IGNORED(folder: str, names: list[str]) -> set[str]:  # noqa: N802 (a copytree `ignore`, like ignore_patterns)
    """Names in `folder` a student copy leaves out: `_IGNORED_NAMES`, and `work/` inside a study's `seed*/`."""
    study_seed = Path(folder).name.startswith("seed")
    return set(_IGNORED_NAMES(folder, names)) | ({"work"} & set(names) if study_seed else set())


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


def _check_destination(src: Path, out: Path, force: bool) -> None:
    """Refuse destinations that would overwrite the reference or copy a folder into itself."""
    if out == src or (src / "minimoe") in (out, *out.parents):
        raise ExerciseError(f"{out} would overwrite the reference code in {src}; pick a folder outside it")
    for name in COPIED:
        if (src / name) in (out, *out.parents):
            raise ExerciseError(f"{out} lies inside {src / name}, which is copied; pick a folder outside it")
    if out.exists() and not out.is_dir():
        raise ExerciseError(f"{out} is a file; the student copy needs a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExerciseError(f"{out} is not empty; choose a new folder or pass --force to overwrite "
                            f"the copied entries ({', '.join(COPIED)}) in it")


def make_student(src_root: Path | str, out_dir: Path | str, force: bool = False) -> dict[str, list[Region]]:
    """Copy the project to out_dir with every exercise region stubbed out, plus a GitHub
    Classroom workflow with one autograding step per exercise. Returns the exercises found."""
    src, out = Path(src_root).resolve(), Path(out_dir).resolve()
    exercises = find_exercises(src)  # validate everything before touching the disk
    points = load_points(src, list(exercises))
    _check_destination(src, out, force)
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source, target = src / name, out / name
        if target.is_dir():
            shutil.rmtree(target)  # --force: replace, so no stale reference file survives
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORED)
        elif source.is_file():
            shutil.copy2(source, target)
    for rel in sorted({region.file for regions in exercises.values() for region in regions}):
        target = out / rel
        target.write_text(strip_source(target.read_text(encoding="utf-8"), rel), encoding="utf-8")
    (out / WORKFLOW).parent.mkdir(parents=True, exist_ok=True)
    (out / WORKFLOW).write_text(workflow_yaml(exercises, points), encoding="utf-8")
    return exercises


def workflow_yaml(exercises: dict[str, list[Region]], points: dict[str, int]) -> str:
    """A GitHub Classroom autograding workflow: one command-grader step per exercise, then the reporter."""
    steps = "".join(_GRADER_STEP.format(name=json.dumps(f"exercise {i}: {r[0].title}", ensure_ascii=False),
                                        marker=marker(i), points=points[i]) for i, r in exercises.items())
    env = "".join(f'        {marker(i).upper()}_RESULTS: "${{{{steps.{marker(i)}.outputs.result}}}}"\n'
                  for i in exercises)
    return _WORKFLOW_HEAD + steps + _REPORTER_STEP.format(env=env, runners=",".join(map(marker, exercises)))


_WORKFLOW_HEAD = """# Generated by `minimoe make-student` from the exercise regions; regenerate, do not edit.
name: Autograding Tests
'on': [push, repository_dispatch]
permissions: {checks: write, actions: read, contents: read}
jobs:
  run-autograding-tests:
    runs-on: ubuntu-latest
    if: github.actor != 'github-classroom[bot]'
    steps:
    - uses: actions/checkout@v4
    - uses: actions/setup-python@v5
      with: {python-version: '3.11'}
    - name: Install minimoe (CPU torch keeps the download small)
      run: |
        python -m pip install torch --index-url https://download.pytorch.org/whl/cpu
        python -m pip install -e ".[dev]"
"""
_GRADER_STEP = """    - name: {name}
      id: {marker}
      uses: education/autograding-command-grader@v1
      with: {{test-name: {marker}, command: python -m pytest -q -m {marker}, timeout: 10, max-score: {points}}}
"""
_REPORTER_STEP = """    - name: Autograding Reporter
      uses: education/autograding-grading-reporter@v1
      env:
{env}      with:
        runners: {runners}
"""


def run_pytest(root: Path | str, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """`python -m pytest ARGS` in root with this interpreter, importing root's own minimoe
    (PYTHONPATH first, even if another copy is installed); stdout and stderr together. An
    interrupted `grade` stops the run and the processes its tests started (`children_stopped`)."""
    env = dict(os.environ, **{NESTED_ENV: "1"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return run_child([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], timeout, cwd=root,
                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _grade_one(root: Path, ex_id: str, title: str, max_points: int, timeout: float) -> dict:
    """Run one exercise's tests; full points if all of them pass (exit 0), else 0."""
    try:
        proc = run_pytest(root, ["-q", "-m", marker(ex_id)], timeout)
        code, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired:
        code, output = None, ""
    return dict(id=ex_id, marker=marker(ex_id), title=title, points=max_points if code == 0 else 0,
                max_points=max_points, status=_status(code, output, ex_id), exit_code=code)


def _status(code: int | None, output: str, ex_id: str) -> str:
    """A one-line verdict for the report: why the exercise got the points it got."""
    if code == 0:
        return "passed"
    if code is None:
        return "timed out"
    if code == 5:  # pytest's "no tests collected": a marker typo must not look like a failure
        return f"no tests carry marker {marker(ex_id)}"
    if f"NotImplementedError: exercise {ex_id}" in output:
        return "not implemented yet"
    return "tests failed" if code == 1 else f"pytest error (exit {code}): run pytest -m {marker(ex_id)}"


def grade(root: Path | str = ".", out_json: Path | str | None = None, out_csv: Path | str | None = None,
          only: list[str] | None = None, jobs: int = 1, timeout: float = 600.0) -> dict:
    """Grade every exercise (or those in `only`: ids "3.2" or markers "ex3_2"), one pytest run
    each; print a table and write JSON/CSV where paths are given.
    Returns {"total", "max_total", "exercises": [{id, marker, title, points, max_points, status, exit_code}]}."""
    root = Path(root).resolve()
    exercises = find_exercises(root)
    points = load_points(root, list(exercises))
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
    result = dict(total=sum(r["points"] for r in rows), max_total=sum(r["max_points"] for r in rows), exercises=rows)
    _report(result, out_json, out_csv)
    return result


def _report(result: dict, out_json: Path | str | None, out_csv: Path | str | None) -> None:
    """Print the points table; write it as JSON and as CSV (one row per exercise)."""
    print(f"{'exercise':<9} {'title':<44} {'points':>7}  status")
    for row in result["exercises"]:
        print(f"{row['marker']:<9} {row['title'][:44]:<44} {row['points']:>3}/{row['max_points']:<3}  {row['status']}")
    print(f"{'total':<9} {'':<44} {result['total']:>3}/{result['max_total']:<3}")
    for path in filter(None, (out_json, out_csv)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if out_json:
        Path(out_json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if out_csv:
        with open(out_csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "marker", "title", "points", "max_points", "status", "exit_code"])
            writer.writeheader()
            writer.writerows(result["exercises"])


def build_cli(name: str) -> argparse.ArgumentParser:
    """Options of `minimoe make-student` and `minimoe grade`."""
    parser = argparse.ArgumentParser(prog=f"minimoe {name}", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="project root holding minimoe/ and tests/ (default: .)")
    if name == "make-student":
        parser.add_argument("out", help="folder to write the student copy to (must be empty, or --force)")
        parser.add_argument("--force", action="store_true", help="overwrite the copied entries of a non-empty OUT")
    else:
        parser.add_argument("--only", default="", help="comma-separated exercises to grade, e.g. ex1_1,ex4_2")
        parser.add_argument("--jobs", type=int, default=1, help="exercises graded in parallel (default: 1)")
        parser.add_argument("--json", default="runs/grade.json", help="JSON report path, relative to --root")
        parser.add_argument("--csv", default="runs/grade.csv", help="CSV report path, relative to --root")
    return parser


def cli_main(name: str, args: argparse.Namespace) -> int:
    """Run a subcommand; grading exits 0 whatever the score (the report carries the points)."""
    root = Path(args.root)
    if name == "make-student":
        exercises = make_student(root, args.out, force=args.force)
        print(f"wrote {args.out}: {len(exercises)} exercises stubbed ({', '.join(exercises)}) and {WORKFLOW}")
        return 0
    only = [item.strip() for item in args.only.split(",") if item.strip()] or None
    grade(root, root / args.json, root / args.csv, only=only, jobs=args.jobs)
    print(f"reports: {root / args.json}, {root / args.csv}")
    return 0
