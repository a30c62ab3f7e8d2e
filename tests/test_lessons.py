"""Tests of the lessons (lessons/*.md): they run, and what they say about the code is still true.

Code blocks in a lesson are fenced with an info string that says what the test does with them:

- ```python           runnable: executed, in order, in one namespace per lesson (tiny sizes).
- ```python excerpt   a short quote of the code: not executed; every non-blank line (indentation
                      stripped) must be a whole line of the source of the symbol cited by the
                      *last* `minimoe/<file>.py::<symbol>` reference on the last non-blank line
                      above the fence, in the same order. A line `...` elides code. Lines inside
                      an exercise region may not be quoted (they are the solution; `# HINT:`
                      lines are fine), so excerpts also hold in a student copy.
- anything else (```bash, ```text, ```json)  shown as is, never run or checked.

Checks:
1. every ```python block of every lesson runs (one lesson per test, cwd a fresh temp dir,
   matplotlib's Agg backend, global torch state restored afterwards), each block within
   BLOCK_BUDGET_S. Marked `exercise`: the blocks run the whole model, which needs every
   exercise solved, so a stripped student copy deselects it with -m "not exercise";
2. every `minimoe/<file>.py::Symbol[.attr]` reference in a lesson or in lessons/README.md
   resolves (import the module, follow the getattr chain), and every `minimoe/<file>.py` named exists;
3. every ```python excerpt block occurs in its cited symbol's source (see above);
4. lessons/README.md lists every NN_*.md lesson that exists, its relative links resolve, it names
   every exercise's `exL_N` marker, and its axis legend is the one in minimoe/__init__.py;
5. every lesson has the template's sections (lessons/README.md), in order.

Tracebacks from a failing block name the lesson file and its line (blocks are compiled with
their line offsets). Run:

    python -m pytest tests/test_lessons.py -q                      # everything (~10 s)
    python -m pytest tests/test_lessons.py -q -k 01_attention      # one lesson
    python -m pytest tests/test_lessons.py -q -m "not exercise"    # what a student copy runs
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import time
import warnings
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import minimoe
from minimoe.exercises import find_exercises, marker

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
LESSON_FILES = sorted(LESSONS.glob("[0-9][0-9]_*.md"))
README = LESSONS / "README.md"
BLOCK_BUDGET_S = 5.0  # a block should take < 2 s; the slack absorbs a busy shared machine

REF = re.compile(r"minimoe/((?:\w+/)*\w+)\.py::([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
PATH = re.compile(r"(?<![\w/.-])minimoe/((?:\w+/)*\w+\.py)\b")
FENCE = re.compile(r"^```(.*)$")
SECTIONS = ("## Why it matters", "## Read alongside", "## The idea", "## Walkthrough", "## Deviations",
            "## Exercises", "## Questions", "## Further reading")
EXERCISE_BEGIN = re.compile(r"#\s*BEGIN EXERCISE \d+\.\d+")
EXERCISE_END = re.compile(r"#\s*END EXERCISE \d+\.\d+")


@dataclass
class Block:
    """One fenced code block: its info string, the line of its opening fence (1-based), its text."""

    info: str
    line: int
    code: str
    above: str  # the last non-blank line before the opening fence ("" if none)


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file, in order; an unclosed fence fails the test."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, info = i, m.group(1).strip()
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            i += 1
        if i == len(lines):
            pytest.fail(f"{rel(path)}:{start + 1}: code fence ```{info} is never closed")
        blocks.append(Block(info, start + 1, "\n".join(lines[start + 1:i]), above))
        i += 1
    return blocks


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def python_blocks(path: Path, kind: str) -> list[Block]:
    """kind "run": ```python blocks; kind "excerpt": ```python excerpt blocks."""
    out = []
    for block in read_blocks(path):
        words = block.info.split()
        if not words or words[0] != "python":
            continue
        if words[1:] not in ([], ["excerpt"]):
            pytest.fail(f"{rel(path)}:{block.line}: unknown info string ```{block.info} "
                        "(use ```python to run a block or ```python excerpt to quote the code)")
        if (kind == "run") == (words[1:] == []):
            out.append(block)
    return out


def resolve(module_path: str, dotted: str):
    """Import minimoe/<module_path>.py and follow the getattr chain → list of objects along it."""
    module = importlib.import_module("minimoe." + module_path.replace("/", "."))
    chain = [module]
    for name in dotted.split("."):
        chain.append(getattr(chain[-1], name))  # AttributeError names the missing part
    return chain


def source_lines(chain: list) -> list[str]:
    """The cited symbol's source lines (indentation stripped), exercise solutions removed.

    A value without source of its own (a constant, a class attribute) is looked up in the
    source of the nearest object along the chain that has one (its class or module).
    """
    for obj in reversed(chain):
        obj = obj.fget if isinstance(obj, property) else obj
        try:
            text = inspect.getsource(obj)
        except (TypeError, OSError):
            continue
        kept, inside = [], False
        for line in text.splitlines():
            stripped = line.strip()
            if EXERCISE_BEGIN.search(stripped):
                inside = True
            elif EXERCISE_END.search(stripped):
                inside = False
            elif inside and not stripped.startswith("# HINT:"):
                continue  # the reference solution (or a student's stub): never quoted
            kept.append(stripped)
        return kept
    raise AssertionError(f"no source found for {chain[-1]!r}")


# --- 1. every runnable block runs ------------------------------------------------------------

@pytest.fixture
def isolated_torch_state():
    """Lessons may seed, change the default dtype or switch grad mode: undo it afterwards."""
    rng, dtype, grad = torch.get_rng_state(), torch.get_default_dtype(), torch.is_grad_enabled()
    yield
    torch.set_rng_state(rng)
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)


@pytest.mark.exercise
@pytest.mark.parametrize("lesson", LESSON_FILES, ids=lambda p: p.stem)
def test_lesson_python_blocks_run(lesson, tmp_path, monkeypatch, isolated_torch_state):
    blocks = python_blocks(lesson, "run")
    monkeypatch.chdir(tmp_path)  # anything a lesson writes lands in a temp dir
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if "matplotlib" in sys.modules:
        import matplotlib

        matplotlib.use("Agg")
    name = f"lesson_{lesson.stem}"
    module = types.ModuleType(name)  # a real module, so dataclasses and pickling work in lessons
    monkeypatch.setitem(sys.modules, name, module)
    slow = []
    for block in blocks:
        # Pad with newlines so tracebacks point at the lesson's own line numbers.
        code = compile("\n" * block.line + block.code, str(lesson), "exec")
        start = time.perf_counter()
        exec(code, module.__dict__)
        seconds = time.perf_counter() - start
        if seconds > BLOCK_BUDGET_S:
            slow.append(f"{rel(lesson)}:{block.line} took {seconds:.1f} s")
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
    if slow:  # a hint for lesson authors, never a failure: this machine's speed is not the lesson's fault
        warnings.warn(f"lesson blocks should stay tiny (about {BLOCK_BUDGET_S} s each): {slow}")


# --- 2. every symbol reference resolves --------------------------------------------------------

@pytest.mark.parametrize("doc", [*LESSON_FILES, README], ids=lambda p: p.stem)
def test_symbol_references_resolve(doc):
    if not doc.exists():
        pytest.skip(f"{rel(doc)} does not exist")
    problems = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        for path in PATH.findall(line):
            if not (ROOT / "minimoe" / path).is_file():
                problems.append(f"{rel(doc)}:{number}: minimoe/{path} does not exist")
        for module_path, dotted in REF.findall(line):
            try:
                resolve(module_path, dotted)
            except (ImportError, AttributeError) as err:
                problems.append(f"{rel(doc)}:{number}: minimoe/{module_path}.py::{dotted}: {err}")
    assert not problems, "\n".join(problems)


# --- 3. every excerpt still occurs in the code it quotes ---------------------------------------

@pytest.mark.parametrize("lesson", LESSON_FILES, ids=lambda p: p.stem)
def test_excerpts_occur_in_cited_symbol(lesson):
    problems = []
    for block in python_blocks(lesson, "excerpt"):
        where = f"{rel(lesson)}:{block.line}"
        refs = REF.findall(block.above)
        if not refs:
            problems.append(f"{where}: an excerpt needs a `minimoe/<file>.py::<symbol>` reference "
                            f"on the line just above it; found {block.above!r}")
            continue
        module_path, dotted = refs[-1]
        try:
            source = source_lines(resolve(module_path, dotted))
        except (ImportError, AttributeError) as err:
            problems.append(f"{where}: cannot resolve minimoe/{module_path}.py::{dotted}: {err}")
            continue
        position = 0  # excerpt lines must appear in the source in the same order
        for quoted in (q.strip() for q in block.code.splitlines()):
            if not quoted or quoted == "...":
                continue
            try:
                position = source.index(quoted, position) + 1
            except ValueError:
                problems.append(f"{where}: line {quoted!r} is not in minimoe/{module_path}.py::{dotted} "
                                "(at this position; exercise solutions cannot be quoted)")
                break
    assert not problems, "\n".join(problems)


# --- 4. the index lists every lesson, exercise and the axis legend ------------------------------

def test_readme_index_lists_every_lesson_and_exercise():
    text = README.read_text(encoding="utf-8")
    missing = [p.name for p in LESSON_FILES if p.name not in text]
    assert not missing, f"lessons/README.md does not list {missing}"
    broken = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
              if "://" not in target and not (LESSONS / target).exists()]
    assert not broken, f"lessons/README.md links to missing files: {broken}"
    unlisted = [ex_id for ex_id in find_exercises(ROOT) if marker(ex_id) not in text]
    assert not unlisted, f"lessons/README.md does not name the markers of exercises {unlisted}"


def test_readme_axis_legend_is_the_package_legend():
    legend = [line.strip() for line in minimoe.__doc__.splitlines() if re.match(r"\s{4}[a-z]  \S", line)]
    assert len(legend) >= 4, "the axis legend in minimoe/__init__.py changed shape; update this test"
    blocks = [b.code for b in read_blocks(README) if b.info == "text" and "batch (examples)" in b.code]
    assert blocks, "lessons/README.md needs the axis legend in a ```text block"
    assert [line.strip() for line in blocks[0].splitlines() if line.strip()] == legend


# --- 5. the template ---------------------------------------------------------------------------

@pytest.mark.parametrize("lesson", LESSON_FILES, ids=lambda p: p.stem)
def test_lesson_follows_the_template(lesson):
    headings, in_fence = [], False
    for line in lesson.read_text(encoding="utf-8").splitlines():
        in_fence = in_fence != bool(FENCE.match(line))  # a fence line opens or closes a block
        if line.startswith("## ") and not in_fence:
            headings.append(line.strip())
    found = [next((i for i, h in enumerate(headings) if h.startswith(s)), None) for s in SECTIONS]
    missing = [s for s, i in zip(SECTIONS, found) if i is None]
    assert not missing, f"{rel(lesson)} lacks the template sections {missing}"
    assert found == sorted(found), f"{rel(lesson)}: sections out of order; expected {SECTIONS}"
