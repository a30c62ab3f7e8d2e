"""Classroom tooling: hand out a student copy with the exercises stubbed out, and grade it.

An exercise is a region of reference code inside a function, marked by `BEGIN EXERCISE L.N:
title` and `END EXERCISE L.N` comments (`minimoe/exercises.py` finds and strips them); its
tests carry the pytest marker `exL_N`.

    minimoe make-student OUT     copy the project, replacing every region's code with
                                 raise NotImplementedError("exercise L.N") (hints stay);
                                 --lessons 1-3: only those lessons' regions
    minimoe grade                run `pytest -m exL_N` per exercise; points from
                                 lessons/points.json (1 point for an id not listed), partial
                                 credit, --reference / --class (minimoe/grading.py)

Nothing is listed by hand: exercises are found by scanning minimoe/, so a new region is
picked up by the stripper, the grader and the generated GitHub Classroom workflow at once.
Not from the paper: this is teaching infrastructure (lessons/teacher/README.md). Read next:
lessons/teacher/README.md, and tests/test_classroom.py for the invariants checked in CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from minimoe.errors import Parser
from minimoe.exercises import ExerciseError, Region, find_exercises, marker, strip_source
from minimoe.grading import COPIED, IGNORED, grade, grade_class, load_points

WORKFLOW = Path(".github/workflows/classroom.yml")
TORCH_PIN = "torch==2.13.0"  # the version the lessons install; a class grades on one torch

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


def make_student(src_root: Path | str, out_dir: Path | str, force: bool = False,
                 lessons: set[int] | None = None) -> dict[str, list[Region]]:
    """Copy the project to out_dir with every exercise region stubbed out (only those of
    `lessons`, if given: the others keep their solution), plus a GitHub Classroom workflow with
    one autograding step per stubbed exercise. Returns the stubbed exercises."""
    src, out = Path(src_root).resolve(), Path(out_dir).resolve()
    exercises = find_exercises(src)  # validate everything before touching the disk
    points = load_points(src, list(exercises))
    if lessons is not None:
        exercises = {i: r for i, r in exercises.items() if int(i.split(".")[0]) in lessons}
        if not exercises:
            raise ExerciseError(f"lessons {sorted(lessons)} have no exercises; pick among "
                                f"{sorted({int(i.split('.')[0]) for i in find_exercises(src)})}")
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
        target.write_text(strip_source(target.read_text(encoding="utf-8"), rel, ids=set(exercises)), encoding="utf-8")
    (out / WORKFLOW).parent.mkdir(parents=True, exist_ok=True)
    (out / WORKFLOW).write_text(workflow_yaml(exercises, points), encoding="utf-8")
    return exercises


def workflow_yaml(exercises: dict[str, list[Region]], points: dict[str, int]) -> str:
    """A GitHub Classroom autograding workflow: one command-grader step per exercise, then the
    reporter. It runs the student's own tests, so it is feedback only (its header says so); the
    grade of record is `grade(..., reference=...)`, which runs the teacher's tests."""
    steps = "".join(_GRADER_STEP.format(name=json.dumps(f"exercise {i}: {r[0].title}", ensure_ascii=False),
                                        marker=marker(i), points=points[i]) for i, r in exercises.items())
    env = "".join(f'        {marker(i).upper()}_RESULTS: "${{{{steps.{marker(i)}.outputs.result}}}}"\n'
                  for i in exercises)
    return _WORKFLOW_HEAD.replace("{torch}", TORCH_PIN) + steps + _REPORTER_STEP.format(env=env, runners=",".join(map(marker, exercises)))


_WORKFLOW_HEAD = """# Generated by `minimoe make-student` from the exercise regions; regenerate, do not edit.
# FEEDBACK ONLY: this runs the tests of this repository, which its owner can edit (this file
# too), all or nothing per exercise. The grade of record comes from protected grading, run
# by the teacher on the teacher's own tests: `minimoe grade --root STUDENT --reference TEACHER`.
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
    - name: Install minimoe (the pinned CPU torch keeps the download small and the grades comparable)
      run: |
        python -m pip install "{torch}" --index-url https://download.pytorch.org/whl/cpu
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


def build_cli(name: str) -> argparse.ArgumentParser:
    """Options of `minimoe make-student` and `minimoe grade`."""
    parser = Parser(prog=f"minimoe {name}", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="project root holding minimoe/ and tests/ (default: .)")
    if name == "make-student":
        parser.add_argument("out", help="folder to write the student copy to (must be empty, or --force)")
        parser.add_argument("--force", action="store_true", help="overwrite the copied entries of a non-empty OUT")
        parser.add_argument("--lessons", default=None, type=parse_lessons, metavar="L",
                            help="stub only these lessons' exercises, e.g. 1-3 or 1,3,4 (default: all); "
                                 "the others keep their solutions, so lessons up to 3 run once 1-3 are solved")
    else:
        parser.add_argument("--only", default="", help="comma-separated exercises to grade, e.g. ex1_1,ex4_2")
        parser.add_argument("--jobs", type=int, default=1, help="exercises graded in parallel (default: 1)")
        parser.add_argument("--reference", default=None,
                            help="protected grading: the teacher's checkout, whose tests/ and pytest settings "
                                 "grade a temporary copy of --root (the student's folder is only read)")
        parser.add_argument("--class", dest="students", nargs="+", default=None, metavar="DIR",
                            help="protected grading of many student folders (needs --reference); "
                                 "one CSV row per student (--csv, default grades/class.csv)")
        parser.add_argument("--json", default=None, help="JSON report path (default: runs/grade.json under "
                                                         "--root; with --reference, none)")
        parser.add_argument("--csv", default=None, help="CSV report path (default: runs/grade.csv under --root; "
                                                        "with --reference, none; with --class, grades/class.csv)")
    return parser


def cli_main(name: str, args: argparse.Namespace) -> int:
    """Run a subcommand; grading exits 0 whatever the score (the report carries the points)."""
    root = Path(args.root)
    if name == "make-student":
        exercises = make_student(root, args.out, force=args.force, lessons=args.lessons)
        print(f"wrote {args.out}: {len(exercises)} exercises stubbed ({', '.join(exercises)}) and {WORKFLOW}")
        return 0
    if args.students:
        if not args.reference:
            raise ExerciseError("--class grades against the teacher's tests; add --reference REF (your checkout)")
        out_csv = args.csv or "grades/class.csv"
        grade_class(args.students, args.reference, out_csv, only=_only(args), jobs=args.jobs)
        print(f"class grades: {out_csv}")
        return 0
    only = _only(args)
    if args.reference:  # reports only where asked: the student's folder is not written to
        out_json, out_csv = args.json, args.csv
    else:
        out_json, out_csv = root / (args.json or "runs/grade.json"), root / (args.csv or "runs/grade.csv")
    grade(root, out_json, out_csv, only=only, jobs=args.jobs, reference=args.reference)
    if out_json or out_csv:
        print(f"reports: {', '.join(str(p) for p in (out_json, out_csv) if p)}")
    return 0


def _only(args: argparse.Namespace) -> list[str] | None:
    """--only as a list of ids or markers (None: every exercise)."""
    return [item.strip() for item in args.only.split(",") if item.strip()] or None


def parse_lessons(text: str) -> set[int]:
    """"1-3" or "1,3,4" or "1-3,7" -> the set of lesson numbers (argparse `type`)."""
    chosen = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        if not (first.isdigit() and (not last or last.isdigit())):
            raise argparse.ArgumentTypeError(f"{part!r} is not a lesson number or range; write e.g. 1-3 or 1,3,4")
        chosen |= set(range(int(first), int(last or first) + 1))
    if not chosen:
        raise argparse.ArgumentTypeError("no lessons given; write e.g. 1-3 or 1,3,4")
    return chosen
