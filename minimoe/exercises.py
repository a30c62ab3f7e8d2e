"""Exercise regions: find them in the reference code, and replace their code with a stub.

An exercise is a region of reference code inside a function, between a `BEGIN EXERCISE L.N:
title` comment and an `END EXERCISE L.N` comment; its tests carry the pytest marker `exL_N`.
`find_exercises` scans minimoe/ strictly: malformed, unbalanced, nested or duplicate markers
raise ExerciseError naming file:line and the fix. `strip_source` replaces each region's code by
raise NotImplementedError("exercise L.N") at the region's indentation; the hints, the signature
and the docstring stay, so the student reads the task where the code was.
Not from the paper: this is teaching infrastructure (lessons/teacher/README.md). Read next:
`minimoe/classroom.py` (the student copy and the grader built on these).

`unsolved_exercise` turns a stub that was reached into the one-line error the command-line entry
points print (`train_tiny.py`, `minimoe ...`): which exercise to solve first, and where.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

from minimoe.errors import MinimoeError

# Marker lines. The loose pattern catches typos ("# begin exercise 1.1") so that they fail
# loudly instead of silently leaving reference code in a student copy.
_LOOSE = re.compile(r"^\s*#\s*(BEGIN|END)\s+EXERCISE\b", re.IGNORECASE)
_BEGIN = re.compile(r"^(?P<indent>[ \t]*)#[ \t]*BEGIN EXERCISE (?P<id>\d+\.\d+): (?P<title>\S.*?)\s*$")
_END = re.compile(r"^[ \t]*#[ \t]*END EXERCISE (?P<id>\d+\.\d+)\s*$")
_HINT = re.compile(r"^\s*#\s*HINT:")
_STUB = re.compile(r'^\s*raise NotImplementedError\("exercise (?P<id>\d+\.\d+)"\)')
_STUB_MESSAGE = re.compile(r"exercise (?P<id>\d+\.\d+)")  # what a stub raises
MARKER_FIX = "write `# BEGIN EXERCISE L.N: title` ... `# END EXERCISE L.N` (e.g. 3.2), one pair per id"


class ExerciseError(MinimoeError, ValueError):
    """A malformed exercise region, points manifest or student-copy destination (message has the fix)."""


class Region(NamedTuple):
    """One exercise region: file relative to the project root, 1-based marker lines, title."""
    file: Path
    start_line: int
    end_line: int
    title: str


def marker(ex_id: str) -> str:
    """The pytest marker of an exercise id: "3.2" -> "ex3_2"."""
    return "ex" + ex_id.replace(".", "_")


def _scan_text(text: str, path: Path | str) -> list[tuple[str, Region]]:
    """(id, region) for each region of one file, in order; ExerciseError at the first bad marker."""
    regions, open_at = [], None  # open_at: (line number, BEGIN match) of the region being read
    for number, line in enumerate(text.splitlines(), start=1):
        if not _LOOSE.match(line):
            continue
        begin, end = _BEGIN.match(line), _END.match(line)
        where = f"{path}:{number}"
        if not (begin or end):
            raise ExerciseError(f"{where}: malformed exercise marker {line.strip()!r}; {MARKER_FIX}")
        if begin and open_at:
            raise ExerciseError(f"{where}: exercise {begin['id']} begins inside exercise {open_at[1]['id']} "
                                f"(opened at line {open_at[0]}); regions cannot nest: close the first one")
        if begin:
            open_at = (number, begin)
        elif not open_at:
            raise ExerciseError(f"{where}: END EXERCISE {end['id']} without a BEGIN; {MARKER_FIX}")
        elif end["id"] != open_at[1]["id"]:
            raise ExerciseError(f"{where}: END EXERCISE {end['id']} closes exercise {open_at[1]['id']} "
                                f"(opened at line {open_at[0]}); make the two ids equal")
        else:
            regions.append((end["id"], Region(Path(path), open_at[0], number, open_at[1]["title"])))
            open_at = None
    if open_at:
        raise ExerciseError(f"{path}:{open_at[0]}: exercise {open_at[1]['id']} is never closed; "
                            f"add `# END EXERCISE {open_at[1]['id']}` after its code")
    return regions


def find_exercises(root: Path | str) -> dict[str, list[Region]]:
    """Scan root/minimoe/**/*.py: exercise id -> its regions (one each; a list leaves room
    for multi-part exercises). Ids come out in numeric order. Strict: malformed, unbalanced,
    nested or duplicate markers, and regions whose stub would not be inside a function,
    raise ExerciseError naming file:line and the fix."""
    root = Path(root)
    if not (root / "minimoe").is_dir():
        raise ExerciseError(f"no minimoe/ package under {root}; run from the project root or pass --root")
    found: dict[str, list[Region]] = {}
    for path in sorted((root / "minimoe").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel, text = path.relative_to(root), path.read_text(encoding="utf-8")
        regions = _scan_text(text, rel)
        for ex_id, region in regions:
            if ex_id in found:
                first = found[ex_id][0]
                raise ExerciseError(f"{rel}:{region.start_line}: exercise {ex_id} is already defined at "
                                    f"{first.file}:{first.start_line}; give one of them a new id")
            found[ex_id] = [region]
        if regions:
            strip_source(text, rel)  # validates that every stub lands inside a function
    return dict(sorted(found.items(), key=lambda item: tuple(map(int, item[0].split(".")))))  # 1.2 < 1.10


def strip_source(text: str, path: Path | str, ids: set[str] | None = None) -> str:
    """Replace the code of each exercise region in `text` (only those in `ids`, if given) by
    `raise NotImplementedError("exercise L.N")` at the BEGIN line's indentation. The BEGIN,
    HINT and END lines stay, and so do the signature and docstring around the region.
    Idempotent: a stub strips to itself. Raises ExerciseError if a stub is not in a function."""
    lines = text.splitlines(keepends=True)
    for ex_id, region in reversed(_scan_text(text, path)):  # bottom-up: earlier line numbers stay valid
        if ids is None or ex_id in ids:
            first, last = region.start_line - 1, region.end_line - 1  # 0-based marker lines
            indent = _BEGIN.match(lines[first])["indent"]
            hints = [line for line in lines[first + 1:last] if _HINT.match(line)]
            lines[first + 1:last] = hints + [f'{indent}raise NotImplementedError("exercise {ex_id}")\n']
    stripped = "".join(lines)
    _check_stubs(stripped, path)
    return stripped


def _check_stubs(stripped: str, path: Path | str) -> None:
    """Each stub must parse and sit inside a function, so that the module still imports."""
    try:
        tree = ast.parse(stripped)
    except SyntaxError as err:
        raise ExerciseError(f"{path}:{err.lineno}: the student stub does not parse ({err.msg}); "
                            "an exercise region must hold whole statements of one function body") from err
    spans = [(node.lineno, node.end_lineno) for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for number, line in enumerate(stripped.splitlines(), start=1):
        stub = _STUB.match(line)
        if stub and not any(start < number <= end for start, end in spans):
            raise ExerciseError(f"{path}:{number}: exercise {stub['id']} is not inside a function, so its "
                                "stub would raise on import; move the region into a (pure) function body")


def unsolved_exercise(err: BaseException, root: Path | str | None = None) -> ExerciseError | None:
    """The error to show for a stub that was reached, NotImplementedError("exercise L.N"): the
    exercise, its place and lesson, and the test to check it with; None for any other error.
    root: the project holding the stub (default: the one this package belongs to)."""
    match = _STUB_MESSAGE.fullmatch(str(err)) if type(err) is NotImplementedError else None
    if match is None:
        return None
    ex_id, root = match["id"], Path(root) if root is not None else Path(__file__).resolve().parent.parent
    try:
        region = find_exercises(root)[ex_id][0]
        where = f"{region.title}, {region.file.as_posix()}:{region.start_line}"
    except (ExerciseError, KeyError):  # the copy was edited: still name the exercise
        where = f"search minimoe/ for BEGIN EXERCISE {ex_id}"
    lessons = sorted((root / "lessons").glob(f"{int(ex_id.split('.')[0]):02d}_*.md"))
    lesson = f"lessons/{lessons[0].name}; " if lessons else ""
    return ExerciseError(f"this command needs exercise {ex_id} ({where}), which is not solved yet; solve it "
                         f"first ({lesson}python -m pytest -m {marker(ex_id)} checks it; minimoe grade lists "
                         "what is left)")
