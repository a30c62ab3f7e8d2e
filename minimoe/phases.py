"""Wall time per phase of a run: where a study's time goes, with plain `perf_counter` timers.

    with phase("upstream"):
        train_upstream(...)
    seconds = take_phases()          # {"upstream": 41.2, ...}, and the totals start again

Phases nest: entering an inner phase pauses the outer one, so every second is counted once,
under the innermost phase open at the time (few-shot fine-tuning inside a cell's few-shot
phase counts as fine-tuning, not twice). The totals are per process, which is what a cell is
(`minimoe/reproduce.py::run_cell` records them in the cell as `phase_seconds`). Read next:
`minimoe/batched.py` (the phases it shortens).
"""

from __future__ import annotations

import contextlib
import time

_totals: dict[str, float] = {}
_open: list[list] = []  # [name, start of its current stretch], innermost last


@contextlib.contextmanager
def phase(name: str):
    """Count the time spent inside the block towards `name` (see the module docstring)."""
    now = time.perf_counter()
    if _open:  # pause the enclosing phase
        outer = _open[-1]
        _totals[outer[0]] = _totals.get(outer[0], 0.0) + now - outer[1]
    _open.append([name, now])
    try:
        yield
    finally:
        now = time.perf_counter()
        _, start = _open.pop()
        _totals[name] = _totals.get(name, 0.0) + now - start
        if _open:  # the enclosing phase resumes
            _open[-1][1] = now


def take_phases() -> dict[str, float]:
    """Seconds per phase since the last call (closed stretches only), and start again."""
    out = dict(_totals)
    _totals.clear()
    return out
