"""Tests of the classroom tooling (minimoe/classroom.py, exercises.py) and of the exercise invariants.

Checks: exercise ids agree across code regions, test markers, lesson headings and
lessons/points.json; malformed markers fail with file:line; stubs keep signature, docstring
and hints and raise NotImplementedError("exercise L.N"); a student copy's exercise tests fail
with their own stub (not an import or collection error) and its other tests pass; grading
gives full points to the reference, zero to a stub and exactly one exercise's points when
only that exercise is solved.

    python -m pytest tests/test_classroom.py -q              # fast checks (~20-40 s: 4 pytest subprocesses)
    python -m pytest tests/test_classroom.py -q -m slow      # whole-suite runs (~5 min on 2 cores)

Tests that spawn pytest skip inside a spawned pytest (no recursion), and tests that need the
reference solutions skip in a student copy, where the solutions are gone.
"""

import csv
import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from minimoe import cli
from minimoe.classroom import IGNORED, NESTED_ENV, grade, load_points, make_student, run_pytest
from minimoe.exercises import ExerciseError, find_exercises, marker, strip_source

ROOT = Path(__file__).resolve().parent.parent
STUB = re.compile(r'^\s*raise NotImplementedError\("exercise \d+\.\d+"\)', re.MULTILINE)
IS_STUDENT_COPY = any(STUB.search(p.read_text(encoding="utf-8")) for p in (ROOT / "minimoe").rglob("*.py"))
spawns_pytest = pytest.mark.skipif(bool(os.environ.get(NESTED_ENV)), reason="already inside a spawned pytest")
needs_reference = pytest.mark.skipif(IS_STUDENT_COPY, reason="student copy: the reference solutions are gone")


@pytest.fixture(scope="module")
def exercises():
    return find_exercises(ROOT)


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("classroom") / "student"
    make_student(ROOT, out)
    return out


def ids_in(pattern: str, paths) -> list[str]:
    """Every exercise id matched by `pattern` (groups: level, number) in the given files."""
    return [f"{m[0]}.{m[1]}" for p in paths for m in re.findall(pattern, p.read_text(encoding="utf-8"))]


def assert_fails_with_own_stub(root: Path, ex_id: str) -> None:
    """`pytest -m exL_N` fails, and every failure is this exercise's own NotImplementedError."""
    proc = run_pytest(root, ["-vv", "-m", marker(ex_id)])  # -vv: summary lines keep the whole message
    assert proc.returncode == 1, f"expected failing tests (exit 1), got exit {proc.returncode}:\n{proc.stdout[-3000:]}"
    lines = proc.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAILED ")]
    assert failed and not [line for line in lines if line.startswith("ERROR ")], proc.stdout[-3000:]
    own = f"NotImplementedError: exercise {ex_id}"
    assert all(line.endswith(own) for line in failed), [line for line in failed if not line.endswith(own)]


# --- ids agree everywhere --------------------------------------------------------------------

def test_ids_match_code_regions_and_test_markers(exercises):
    marked = set(ids_in(r"mark\.ex(\d+)_(\d+)\b", sorted((ROOT / "tests").glob("test_*.py"))))
    assert exercises, "no exercise regions found in minimoe/"
    assert not set(exercises) - marked, f"exercises without any test marked exL_N: {set(exercises) - marked}"
    assert not marked - set(exercises), f"test markers without an exercise region: {marked - set(exercises)}"


def test_lesson_headings_match_code_regions(exercises):
    lessons = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.md"))
    if not lessons:
        pytest.skip("lessons/ has no NN_topic.md yet; headings are checked once lessons exist")
    headings = ids_in(r"(?m)^###\s+Exercise\s+(\d+)\.(\d+)\b", lessons)
    assert len(headings) == len(set(headings)), f"an exercise heading appears twice: {sorted(headings)}"
    assert set(headings) == set(exercises), (f"missing headings: {set(exercises) - set(headings)}; "
                                             f"headings without code: {set(headings) - set(exercises)}")
    for lesson in lessons:  # exercise L.N belongs to lesson NN = L
        for ex_id in ids_in(r"(?m)^###\s+Exercise\s+(\d+)\.(\d+)\b", [lesson]):
            assert int(ex_id.split(".")[0]) == int(lesson.name[:2]), f"exercise {ex_id} is in {lesson.name}"


def test_points_manifest_names_only_existing_exercises(exercises):
    table = json.loads((ROOT / "lessons/points.json").read_text(encoding="utf-8"))
    assert set(table) <= set(exercises), f"points.json names unknown ids {set(table) - set(exercises)}"
    points = load_points(ROOT, list(exercises))
    assert all(points[i] == table.get(i, 1) for i in exercises)  # unlisted ids are worth 1 point


def test_points_manifest_rejects_unknown_ids_and_bad_points(tmp_path):
    (tmp_path / "lessons").mkdir()
    for table, message in [({"9.9": 1}, "9.9"), ({"1.1": 0}, "positive"), ({"1.1": 1.5}, "positive")]:
        (tmp_path / "lessons/points.json").write_text(json.dumps(table))
        with pytest.raises(ExerciseError, match=message):
            load_points(tmp_path, ["1.1"])


# --- markers and stubs ----------------------------------------------------------------------

HEAD = "def f(x):\n"
CODE = "    return x\n"
BAD_MARKERS = {  # source -> the line the error must name
    "unclosed": (HEAD + "    # BEGIN EXERCISE 9.1: t\n" + CODE, 2),
    "end without begin": (HEAD + CODE + "    # END EXERCISE 9.1\n", 3),
    "nested": (HEAD + "    # BEGIN EXERCISE 9.1: t\n    # BEGIN EXERCISE 9.2: u\n" + CODE, 3),
    "mismatched end": (HEAD + "    # BEGIN EXERCISE 9.1: t\n" + CODE + "    # END EXERCISE 9.2\n", 4),
    "malformed id": (HEAD + "    # BEGIN EXERCISE 9: t\n" + CODE + "    # END EXERCISE 9\n", 2),
    "lower case": (HEAD + "    # begin exercise 9.1: t\n" + CODE + "    # end exercise 9.1\n", 2),
    "outside a function": ("# BEGIN EXERCISE 9.1: t\nX = 1\n# END EXERCISE 9.1\n", 2),
}


@pytest.mark.parametrize("case", BAD_MARKERS)
def test_malformed_markers_raise_with_file_and_line(case):
    source, line = BAD_MARKERS[case]
    with pytest.raises(ExerciseError, match=rf"sample\.py:{line}: .*"):
        strip_source(source, "sample.py")


def test_duplicate_ids_across_files_name_both_places(tmp_path):
    (tmp_path / "minimoe").mkdir()
    region = HEAD + "    # BEGIN EXERCISE 9.1: t\n" + CODE + "    # END EXERCISE 9.1\n"
    for name in ("a.py", "b.py"):
        (tmp_path / "minimoe" / name).write_text(region)
    with pytest.raises(ExerciseError, match=r"minimoe/b\.py:2: .*minimoe/a\.py:2"):
        find_exercises(tmp_path)


SAMPLE = '''"""A sample module."""


def scale(x: float, factor: float = 2.0) -> float:
    """Multiply x by factor."""
    # BEGIN EXERCISE 9.9: scale a number
    # HINT: one multiplication.
    y = x * factor
    # HINT: then return it.
    return y
    # END EXERCISE 9.9


def other(x):
    # BEGIN EXERCISE 9.8: stays when not chosen
    return -x
    # END EXERCISE 9.8
'''


def test_strip_source_keeps_signature_docstring_hints_and_imports(tmp_path):
    stripped = strip_source(SAMPLE, "sample.py", ids={"9.9"})
    for kept in ("def scale(x: float, factor: float = 2.0) -> float:", '"""Multiply x by factor."""',
                 "# HINT: one multiplication.", "# HINT: then return it.", "# END EXERCISE 9.9",
                 '    raise NotImplementedError("exercise 9.9")', "    return -x"):
        assert kept in stripped
    assert "y = x * factor" not in stripped and "return y" not in stripped
    assert strip_source(stripped, "sample.py", ids={"9.9"}) == stripped  # idempotent
    (tmp_path / "sample.py").write_text(stripped)
    spec = importlib.util.spec_from_file_location("sample", tmp_path / "sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the stub keeps the module importable
    with pytest.raises(NotImplementedError, match=r"^exercise 9\.9$"):
        module.scale(1.0)
    assert module.other(3) == -3


# --- the student copy ------------------------------------------------------------------------

def region_lines(root: Path, region) -> list[str]:
    """The lines strictly between a region's BEGIN and END markers."""
    return (root / region.file).read_text(encoding="utf-8").splitlines()[region.start_line:region.end_line - 1]


def test_student_copy_has_every_region_stubbed_and_nothing_private(student_copy, exercises):
    copied = find_exercises(student_copy)
    assert list(copied) == list(exercises)
    for ex_id, (region, *_) in copied.items():
        body = region_lines(student_copy, region)
        hints = [line for line in region_lines(ROOT, exercises[ex_id][0]) if "# HINT:" in line]
        assert [line for line in body if "# HINT:" in line] == hints
        assert [line.strip() for line in body if "# HINT:" not in line] == [f'raise NotImplementedError("exercise {ex_id}")']
    assert not list(student_copy.rglob("__pycache__")) and not (student_copy / ".git").exists()
    assert (student_copy / "tests/conftest.py").exists() and (student_copy / "lessons/points.json").exists()


def test_student_copy_leaves_study_checkpoints_behind():
    """A study's cells stay (they are the results lessons read); its checkpoints do not."""
    names = ["dense.json", "work", "pretrain.pt", "two_stage.pt.tmpab12cd", "report.md"]
    assert IGNORED("lessons/results/resplit/seed0", names) == {"work", "pretrain.pt", "two_stage.pt.tmpab12cd"}
    assert IGNORED("lessons", ["work", "08_routes.md"]) == set()  # a folder named work elsewhere is kept


def test_workflow_has_one_grading_step_per_exercise(student_copy, exercises):
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((student_copy / ".github/workflows/classroom.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    graders = [s for s in steps if s.get("uses") == "education/autograding-command-grader@v1"]
    points = load_points(ROOT, list(exercises))
    assert [s["id"] for s in graders] == [marker(i) for i in exercises]
    for step, ex_id in zip(graders, exercises):
        assert step["with"]["command"] == f"python -m pytest -q -m {marker(ex_id)}"
        assert step["with"]["max-score"] == points[ex_id]
    reporter = steps[-1]
    assert reporter["with"]["runners"] == ",".join(marker(i) for i in exercises)
    assert set(reporter["env"]) == {f"{marker(i).upper()}_RESULTS" for i in exercises}


def test_make_student_refuses_unsafe_destinations(tmp_path, capsys):
    for inside in (ROOT / "minimoe" / "student", ROOT):
        with pytest.raises(ExerciseError, match="overwrite the reference"):
            make_student(ROOT, inside, force=True)
    assert not (ROOT / "minimoe" / "student").exists()
    (tmp_path / "notes.txt").write_text("keep me")
    assert cli.main(["make-student", str(tmp_path), "--root", str(ROOT)]) == 2
    assert "not empty" in capsys.readouterr().err and not (tmp_path / "minimoe").exists()
    assert cli.main(["make-student", str(tmp_path), "--root", str(ROOT), "--force"]) == 0
    assert (tmp_path / "minimoe").is_dir() and (tmp_path / "notes.txt").read_text() == "keep me"


@spawns_pytest
def test_two_exercises_fail_with_their_own_stub(student_copy, exercises):
    ids = list(exercises)
    for ex_id in (ids[0], ids[-1]):
        assert_fails_with_own_stub(student_copy, ex_id)


@spawns_pytest
@needs_reference
def test_grade_awards_exactly_the_solved_exercise(tmp_path, exercises):
    ids, copy = list(exercises), tmp_path / "student"
    make_student(ROOT, copy)
    solved, unsolved = ids[0], ids[-1]
    rel = exercises[solved][0].file  # restore the solved region, keep the file's others stubbed
    others = {i for i, (r, *_) in exercises.items() if r.file == rel and i != solved}
    (copy / rel).write_text(strip_source((ROOT / rel).read_text(encoding="utf-8"), rel, ids=others))
    argv = ["grade", "--root", str(copy), "--only", f"{marker(solved)},{unsolved}", "--json", "g.json", "--csv", "g.csv"]
    assert cli.main(argv) == 0  # exit 0 whatever the score
    report = json.loads((copy / "g.json").read_text(encoding="utf-8"))
    points = load_points(ROOT, ids)
    assert [(r["id"], r["points"]) for r in report["exercises"]] == [(solved, points[solved]), (unsolved, 0)]
    assert report["exercises"][1]["status"] == "not implemented yet"
    assert report["total"] == points[solved] and report["max_total"] == points[solved] + points[unsolved]
    with open(copy / "g.csv", newline="", encoding="utf-8") as f:
        assert [row["points"] for row in csv.DictReader(f)] == [str(points[solved]), "0"]


def test_grade_rejects_unknown_exercises_before_running_anything(tmp_path):
    with pytest.raises(ExerciseError, match="ex99_1"):
        grade(ROOT, tmp_path / "g.json", only=["ex99_1"])
    assert not (tmp_path / "g.json").exists()


# --- slow: whole-suite runs ------------------------------------------------------------------

@pytest.mark.slow
@spawns_pytest
def test_student_copy_non_exercise_tests_pass(student_copy):
    proc = run_pytest(student_copy, ["-q", "-x", "-m", "not exercise"])
    assert proc.returncode == 0, proc.stdout[-5000:]


@pytest.mark.slow
@spawns_pytest
def test_every_exercise_fails_with_its_own_stub_and_grades_zero(student_copy, exercises):
    for ex_id in exercises:
        assert_fails_with_own_stub(student_copy, ex_id)
    report = grade(student_copy, jobs=2)
    assert [(r["id"], r["points"], r["status"]) for r in report["exercises"]] == [
        (i, 0, "not implemented yet") for i in exercises]


@pytest.mark.slow
@spawns_pytest
@needs_reference
def test_grade_gives_the_reference_full_points(exercises):
    report = grade(ROOT, jobs=2)
    assert [r["id"] for r in report["exercises"]] == list(exercises)
    assert report["total"] == report["max_total"], [r for r in report["exercises"] if r["points"] == 0]
