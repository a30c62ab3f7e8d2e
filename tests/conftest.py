"""Markers and selection rules shared by every test file.

- One pytest marker per classroom exercise, `ex<L>_<N>`, from the `# BEGIN EXERCISE L.N` regions
  of the reference code, the `raise NotImplementedError("exercise L.N")` stubs of a student
  copy and the markers the tests use: the list is never kept by hand (a marker without a region
  fails tests/test_classroom.py).
- A test marked `exL_N` also carries the umbrella marker `exercise`, so one marker is enough and
  `pytest -m "not exercise"` can never pick a test that needs an exercise's solution.
- `slow` tests run only when the `-m` expression names `slow` (`-m slow`, `-m "slow and not
  exercise"`). A `-m` on the command line replaces one in the pytest settings, so "not slow" is
  applied here instead: `pytest -m "not exercise"` or `pytest -m ex7_2` stays fast. A slow test
  that guards reliability (real processes killed or interrupted, determinism across processes,
  whole commands, the committed studies that rebuild in seconds) also carries `ci`: `.ci/run`
  runs `-m "slow and ci"` after the fast suite; the other slow tests run only on demand.
- In a student copy, a test without the `exercise` marker that reaches an unsolved stub is
  reported as skipped ("needs exercise L.N") instead of failing: the student sees what to solve,
  not a bug. tests/test_classroom.py checks that a fresh copy has no such test (each one should
  carry its exercise's marker).
"""

import re
from pathlib import Path

import pytest
import torch

# Tiny tensors run faster on one thread, and a shared 2-core machine stays responsive.
torch.set_num_threads(1)

# Either form names the same id: the reference region or the stub that replaces it.
_EXERCISE_ID = re.compile(r"#\s*BEGIN EXERCISE (\d+)\.(\d+)"
                          r"|raise NotImplementedError\(\s*[\"']exercise (\d+)\.(\d+)[\"']")
_EXERCISE_MARKER = re.compile(r"ex\d+_\d+")
_MARK = re.compile(r"mark\.ex(\d+)_(\d+)\b")
_STUB_MESSAGE = re.compile(r"exercise (\d+)\.(\d+)")
NEEDS_EXERCISE = "needs exercise"  # the skip reason's prefix (tests/test_classroom.py looks for it)


def pytest_configure(config):
    package = Path(__file__).resolve().parent.parent / "minimoe"
    ids = set()
    for path in sorted(package.rglob("*.py")):
        for match in _EXERCISE_ID.finditer(path.read_text(encoding="utf-8")):
            level, number = match.group(1) or match.group(3), match.group(2) or match.group(4)
            ids.add((int(level), int(number)))
    # And the markers the tests use: a student who deleted a region's comments still gets that
    # exercise graded (tests/test_classroom.py checks that every marker has a region).
    for path in sorted(Path(__file__).resolve().parent.glob("test_*.py")):
        ids |= {(int(a), int(b)) for a, b in _MARK.findall(path.read_text(encoding="utf-8"))}
    for level, number in sorted(ids):
        config.addinivalue_line("markers", f"ex{level}_{number}: exercise {level}.{number}")


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection, which must see the added markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(_EXERCISE_MARKER.fullmatch(mark.name) for mark in item.iter_markers()):
            item.add_marker("exercise")
    if "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed and call.excinfo is not None and not item.get_closest_marker("exercise"):
        stub = call.excinfo.value
        match = _STUB_MESSAGE.fullmatch(str(stub)) if type(stub) is NotImplementedError else None
        if match:
            ex_id = f"{match[1]}.{match[2]}"
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0,
                               f"Skipped: {NEEDS_EXERCISE} {ex_id}, not solved yet "
                               f"(python -m pytest -m ex{match[1]}_{match[2]})")
