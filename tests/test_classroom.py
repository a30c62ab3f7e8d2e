"""Tests of the classroom tooling (minimoe/classroom.py, exercises.py) and of the exercise invariants.

Checks: exercise ids agree across code regions, test markers, lesson headings and
lessons/points.json; malformed markers fail with file:line; stubs keep signature, docstring
and hints and raise NotImplementedError("exercise L.N"), and the hints name what the code
around the region needs (names read after it, None cases); a student copy's exercise tests fail
with their own stub (not an import or collection error), the commands of "Start here" in
lessons/README.md do what it says, and the trainer stops with one line naming the exercise to
solve; grading gives full points to the reference, zero to a stub and exactly one exercise's
points when only that exercise is solved.

    python -m pytest tests/test_classroom.py -q              # fast checks (4 short pytest subprocesses)
    python -m pytest tests/test_classroom.py -q -m slow      # grading runs, whole-suite runs (minutes)

Tests that spawn pytest skip inside a spawned pytest (no recursion), and tests that need the
reference solutions skip in a student copy, where the solutions are gone.
"""

import ast
import csv
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from minimoe import cli
from minimoe.classroom import make_student
from minimoe.grading import IGNORED, NESTED_ENV, grade, load_points, run_pytest
from minimoe.exercises import ExerciseError, find_exercises, marker, strip_source, unsolved_exercise

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


START_HERE = re.compile(r"<!-- start-here -->\s*```bash\n(.*?)```\s*<!-- /start-here -->", re.DOTALL)


def start_here_commands() -> list[list[str]]:
    """The commands of "Start here (students)" in lessons/README.md as argv lists (comments dropped)."""
    found = START_HERE.search((ROOT / "lessons" / "README.md").read_text(encoding="utf-8"))
    assert found, "lessons/README.md has no <!-- start-here --> bash block"
    return [shlex.split(line, comments=True) for line in found[1].splitlines() if line.strip()]


def pytest_args(selector: str) -> list[str]:
    """The arguments of the start-here command `python -m pytest ... -m <selector> ...`."""
    for argv in start_here_commands():
        if argv[:3] == ["python", "-m", "pytest"] and selector in argv:
            return argv[3:]
    raise AssertionError(f"lessons/README.md's start-here block runs no `python -m pytest -m {selector!r}`")


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


def _region_function(tree: ast.AST, line: int) -> ast.FunctionDef:
    """The innermost function whose body holds `line`."""
    spans = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
             and node.lineno < line <= node.end_lineno]
    return max(spans, key=lambda node: node.lineno)


@needs_reference
def test_hints_name_what_the_code_around_each_region_needs(exercises):
    """A stub keeps only its hints, so they must say what the kept code needs: every name the
    region assigns that the function reads after END EXERCISE, and "None" where the region's
    code handles a None (an optional argument, a skipped expert)."""
    for ex_id, (region, *_) in exercises.items():
        source = (ROOT / region.file).read_text(encoding="utf-8")
        inside = range(region.start_line + 1, region.end_line)  # 1-based lines between the markers
        hints = " ".join(line for line in source.splitlines()[region.start_line:region.end_line - 1]
                         if "# HINT:" in line)
        names = [node for node in ast.walk(_region_function(ast.parse(source), region.start_line))
                 if isinstance(node, ast.Name)]
        assigned = {n.id for n in names if isinstance(n.ctx, ast.Store) and n.lineno in inside}
        read_after = {n.id for n in names if isinstance(n.ctx, ast.Load) and n.lineno > region.end_line}
        unnamed = sorted(name for name in assigned & read_after if not re.search(rf"\b{name}\b", hints))
        assert not unnamed, f"exercise {ex_id}: the hints never name {unnamed}, which the code after the region reads"
        handles_none = any(re.search(r"\bis (not )?None\b", line) for line in source.splitlines()[region.start_line:region.end_line - 1]
                           if "# HINT:" not in line)
        assert not handles_none or "None" in hints, f"exercise {ex_id}: the code handles None; say when in a hint"


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


def normalised(line: str) -> str:
    """A code line without indentation, comments and repeated spaces ("" for a comment line)."""
    code = "" if line.strip().startswith("#") else re.sub(r"\s+#.*$", "", line.strip())
    return re.sub(r"\s+", " ", code)


def repeats(solution: list[str], lines: list[str]) -> list[int]:
    """1-based lines of `lines` where a window of len(solution) + 2 lines holds at least half of
    the solution's lines (at least 2; a one-line solution: that line)."""
    wanted, width = set(solution), len(solution) + 2
    need = 1 if len(wanted) == 1 else max(2, -(-len(wanted) // 2))
    hits = [n for n, line in enumerate(lines) if line in wanted]
    return [n + 1 for n in hits if len(wanted & set(lines[n:n + width])) >= need]


@needs_reference
def test_no_exercise_solution_is_repeated_in_the_student_copy(student_copy, exercises):
    """Every exercise's solution (its code lines, normalised; lines under 12 characters are too
    common to count) is compared with every .py and .md file of the student copy: a verbatim
    repeat elsewhere would hand the solution out. Fix one by calling the exercise's function."""
    corpus = {p: [normalised(line) for line in p.read_text(encoding="utf-8", errors="ignore").splitlines()]
              for p in sorted(student_copy.rglob("*")) if p.suffix in (".py", ".md") and p.is_file()}
    leaks = []
    for ex_id, (region, *_) in exercises.items():
        solution = [code for code in map(normalised, region_lines(ROOT, region)) if len(code) >= 12]
        for path, lines in corpus.items():
            leaks += [f"exercise {ex_id}: {path.relative_to(student_copy)}:{n}" for n in repeats(solution, lines)]
    assert not leaks, f"solutions repeated in the student copy: {leaks}"


def test_repeats_finds_a_solution_with_one_line_changed():
    solution = ["slack = 1e-12 * max(1.0, abs(observed))", "at_least = sum(d() >= observed - slack)",
                "return float((1 + at_least) / (1 + n))"]
    elsewhere = ["x = 1", solution[0], "at_least = sum(other() >= observed - slack)", solution[2]]
    assert repeats(solution, elsewhere) == [2]
    assert repeats(solution, [solution[0], "y = 2"]) == []  # one shared line is not a repeat


@needs_reference
def test_student_copy_leaves_out_the_teacher_pack(student_copy):
    assert (ROOT / "lessons/teacher/README.md").exists() and not (student_copy / "lessons/teacher").exists()
    assert not [p for p in student_copy.rglob("*.md") if "answer key" in p.read_text(encoding="utf-8").lower()]


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


def test_start_here_makes_a_copy_runs_the_first_exercise_and_grades(exercises):
    commands = start_here_commands()
    assert commands[0][:2] == ["minimoe", "make-student"]
    assert any("venv" in argv for argv in commands), "the copy needs its own environment"
    assert pytest_args("not exercise") and pytest_args(marker(next(iter(exercises))))
    assert ["minimoe", "grade"] in commands


def test_unsolved_exercise_names_the_exercise_its_place_and_its_test():
    first = next(iter(find_exercises(ROOT)))
    message = str(unsolved_exercise(NotImplementedError(f"exercise {first}"), ROOT))
    region = find_exercises(ROOT)[first][0]
    for part in (f"exercise {first}", f"{region.file.as_posix()}:{region.start_line}", region.title,
                 f"python -m pytest -m {marker(first)}", "lessons/01_"):
        assert part in message, part
    assert "\n" not in message
    for other in (NotImplementedError("subclasses must define k_shot"), ValueError("exercise 1.1")):
        assert unsolved_exercise(other, ROOT) is None


def test_commands_turn_a_reached_stub_into_one_line(monkeypatch, capsys):
    from minimoe import reproduce_cli

    def reached_stub(name, args):
        raise NotImplementedError("exercise 4.2")
    monkeypatch.setattr(reproduce_cli, "cli_main", reached_stub)
    assert cli.main(["reproduce", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this command needs exercise 4.2") and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.ci
def test_trainer_in_a_student_copy_stops_with_one_line(student_copy, tmp_path):
    """`python train_tiny.py` before the exercises are solved: exit 2 and one line naming the
    first exercise it reached, no traceback."""
    proc = subprocess.run([sys.executable, "train_tiny.py", "--preset=tiny", "--quiet", f"--out={tmp_path / 'run'}"],
                          cwd=student_copy, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(student_copy)))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: this command needs exercise \d+\.\d+ \(.*\), which is not solved yet",
                                        lines[0]), proc.stderr


@pytest.mark.slow
@pytest.mark.ci
@spawns_pytest
def test_two_exercises_fail_with_their_own_stub(student_copy, exercises):
    ids = list(exercises)
    for ex_id in (ids[0], ids[-1]):
        assert_fails_with_own_stub(student_copy, ex_id)


@pytest.mark.slow
@pytest.mark.ci
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
def test_start_here_commands_work_in_a_fresh_student_copy(student_copy, exercises):
    """The docs' own commands, as written: every test that is not an exercise test passes (none
    skipped for waiting on an exercise: such a test must carry that exercise's marker), and the
    first exercise fails with its own stub."""
    proc = run_pytest(student_copy, pytest_args("not exercise"))
    assert proc.returncode == 0, proc.stdout[-5000:]
    waiting = [line for line in proc.stdout.splitlines() if "needs exercise" in line]
    assert not waiting, f"tests without the marker of the exercise they need: {waiting}"
    first = next(iter(exercises))
    assert marker(first) in pytest_args(marker(first))
    assert_fails_with_own_stub(student_copy, first)


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


# --- protected grading, partial credit, class grades -----------------------------------------

TAMPER = '''

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # a student's "fix": every test passes
    report = (yield).get_result()
    report.outcome = "passed"
'''


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder: (size, mtime in ns), to show that grading did not write to it."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.ci
@spawns_pytest
@needs_reference
def test_protected_grading_ignores_a_tampered_conftest(tmp_path, exercises):
    """Four lines in the student's tests/conftest.py pass every test under plain `grade`;
    `grade --reference` runs the teacher's tests instead, so the unsolved exercise scores 0,
    and the student's folder is left exactly as it was."""
    copy, unsolved = tmp_path / "student", marker(list(exercises)[-1])
    make_student(ROOT, copy)
    with open(copy / "tests/conftest.py", "a", encoding="utf-8") as f:
        f.write(TAMPER)
    (copy / "lessons/points.json").write_text(json.dumps({i: 50 for i in exercises}))  # points are the teacher's too
    assert grade(copy, only=[unsolved], quiet=True)["exercises"][0]["status"] == "passed"  # the tamper works
    before = snapshot(copy)
    report = grade(copy, only=[unsolved], reference=ROOT, quiet=True)
    row = report["exercises"][0]
    assert (row["points"], row["status"]) == (0, "not implemented yet")
    assert row["max_points"] == load_points(ROOT, list(exercises))[list(exercises)[-1]]
    assert snapshot(copy) == before


PARTIAL = {
    "minimoe/__init__.py": "",
    "minimoe/sample.py": 'def scale(x):\n    """2x."""\n    # BEGIN EXERCISE 9.9: scale\n    return 2 * x\n'
                         '    # END EXERCISE 9.9\n',
    "tests/test_sample.py": "import pytest\nfrom minimoe.sample import scale\n\n\n@pytest.mark." + marker("9.9") + "\n"
                            "@pytest.mark.parametrize('x', [0, 1, 2, 3])\ndef test_scale(x):\n"
                            "    assert scale(x) == (2 * x if x else 1)  # x = 0 expects the impossible\n",
    "pyproject.toml": '[tool.pytest.ini_options]\nmarkers = ["ex9_9: sample"]\n',
    "lessons/points.json": '{"9.9": 2}',
}


@spawns_pytest
def test_partial_credit_is_the_fraction_of_tests_passed(tmp_path):
    for rel, text in PARTIAL.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    row = grade(tmp_path, quiet=True)["exercises"][0]
    assert (row["points"], row["max_points"], row["passed"], row["tests"]) == (1.5, 2, 3, 4)
    assert row["status"] == "3/4 tests passed"


@pytest.mark.slow
@pytest.mark.ci
@spawns_pytest
@needs_reference
def test_class_grades_csv_from_two_folders(tmp_path, exercises):
    """`minimoe grade --class A B --reference REF`: one row per student, the solved exercise
    earns its points in the folder that solved it only."""
    solved = list(exercises)[0]
    rel = exercises[solved][0].file
    for name in ("alice", "bob"):
        make_student(ROOT, tmp_path / name)
    others = {i for i, (r, *_) in exercises.items() if r.file == rel and i != solved}
    (tmp_path / "alice" / rel).write_text(strip_source((ROOT / rel).read_text(encoding="utf-8"), rel, ids=others))
    out = tmp_path / "grades" / "class.csv"
    argv = ["grade", "--class", str(tmp_path / "alice"), str(tmp_path / "bob"), "--reference", str(ROOT),
            "--only", marker(solved), "--csv", str(out)]
    assert cli.main(argv) == 0
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    full = load_points(ROOT, list(exercises))[solved]
    assert [(r["student"], float(r[marker(solved)]), float(r["total"])) for r in rows] == [
        ("alice", full, full), ("bob", 0, 0)]
    assert not (tmp_path / "alice" / "runs").exists()


def test_class_grading_needs_a_reference(capsys):
    assert cli.main(["grade", "--class", str(ROOT)]) == 2
    assert "--reference" in capsys.readouterr().err


# --- lessons in order -------------------------------------------------------------------------

def needs_column() -> dict[str, set[str]]:
    """lessons/README.md's "its code needs solved" column: lesson "03" -> the exercise ids it names
    ("exercises of 01–03" names every exercise of those lessons; "nothing" none)."""
    ids, needs = list(find_exercises(ROOT)), {}
    for row in re.findall(r"(?m)^\| \[(\d\d) .*\| ([^|]+) \|$", (ROOT / "lessons/README.md").read_text(encoding="utf-8")):
        lesson, text = row
        span = re.search(r"exercises of (\d+)–(\d+)", text)
        named = set(re.findall(r"\b\d+\.\d+\b", re.sub(r"exercises of \d+–\d+", "", text)))
        lessons = range(int(span[1]), int(span[2]) + 1) if span else ()
        needs[lesson] = named | {i for i in ids if int(i.split(".")[0]) in lessons}
    return needs


@needs_reference
def test_make_student_stubs_only_the_chosen_lessons(tmp_path, exercises):
    from minimoe.classroom import parse_lessons
    assert parse_lessons("1-3") == {1, 2, 3} and parse_lessons("1-3,7") == {1, 2, 3, 7}
    stubbed = make_student(ROOT, tmp_path / "copy", lessons=parse_lessons("1-3"))
    assert list(stubbed) == [i for i in exercises if int(i.split(".")[0]) <= 3]
    text = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "copy/minimoe").rglob("*.py"))
    assert set(re.findall(r'NotImplementedError\("exercise (\d+\.\d+)"\)', text)) == set(stubbed)
    with pytest.raises(ExerciseError, match="no exercises"):
        make_student(ROOT, tmp_path / "none", lessons={0})


@spawns_pytest
@needs_reference
@pytest.mark.parametrize("lesson", ["00", "01", "02", "03"])
def test_lessons_run_with_only_the_exercises_the_index_says_they_need(lesson, tmp_path, exercises):
    """In a copy where every exercise is stubbed except those lessons/README.md says lesson NN
    needs, its executed blocks run: after lessons 1–3 (and 4.1, which lesson 03's pools use),
    lessons 00–03 work; `make-student --lessons 1-3` leaves exactly those solvable."""
    needed = needs_column()[lesson]
    copy = tmp_path / "copy"
    make_student(ROOT, copy, lessons={int(i.split(".")[0]) for i in exercises})
    for rel in {r.file for r, *_ in exercises.values()}:
        (copy / rel).write_text(strip_source((ROOT / rel).read_text(encoding="utf-8"), rel,
                                             ids=set(exercises) - needed), encoding="utf-8")
    proc = run_pytest(copy, ["-q", "tests/test_lessons.py", "-k", f"blocks_run and {lesson}_"])
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_workflow_pins_torch_and_version_comes_from_pyproject(student_copy, capsys):
    from minimoe.classroom import TORCH_PIN

    workflow = (student_copy / ".github/workflows/classroom.yml").read_text(encoding="utf-8")
    assert f'pip install "{TORCH_PIN}"' in workflow and TORCH_PIN == "torch==2.13.0"
    # It runs the student's own (editable) tests: it must say that it is feedback, not the grade.
    assert "FEEDBACK ONLY" in workflow and "minimoe grade --root STUDENT --reference TEACHER" in workflow
    assert cli.main(["--version"]) == 0
    pinned = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))[1]
    assert capsys.readouterr().out.strip() in (f"minimoe {pinned}", "minimoe unknown (not installed: pip install -e .)")


@pytest.mark.slow
@pytest.mark.ci
@spawns_pytest
@needs_reference
def test_protected_grading_counts_a_solution_whose_markers_were_deleted(tmp_path, exercises):
    """Students delete comments: an exercise solved with its BEGIN/END lines gone still earns its points."""
    solved = list(exercises)[0]
    rel = exercises[solved][0].file
    make_student(ROOT, tmp_path / "student")
    others = {i for i, (r, *_) in exercises.items() if r.file == rel and i != solved}
    text = strip_source((ROOT / rel).read_text(encoding="utf-8"), rel, ids=others)
    text = "".join(line for line in text.splitlines(keepends=True) if f"EXERCISE {solved}" not in line)
    (tmp_path / "student" / rel).write_text(text, encoding="utf-8")
    row = grade(tmp_path / "student", only=[marker(solved)], reference=ROOT, quiet=True)["exercises"][0]
    assert (row["points"], row["status"]) == (load_points(ROOT, list(exercises))[solved], "passed")
