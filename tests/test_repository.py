"""The repository speaks only of itself: no tracked text refers to how it was developed, or to
documents that are not in it.

A student clones this repository and nothing else, so a pointer to a design note outside it is
a dead link, and a word about work periods or issue numbers explains nothing. The patterns
below are checked over every tracked text file (this file excepted: it has to name them).
Run: python -m pytest tests/test_repository.py -q
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Built from parts, so that this file, which has to name them, does not read as using them.
_NOTES = ("DESIGN", "PAPER", "STYLE")  # names of design notes that live outside the repository
_WORDS = ("session", "previous " + "day", "work " + "period")
FORBIDDEN = re.compile(
    rf"(?i:\b{_WORDS[0]}s? \d+|\bnext {_WORDS[0]}\b|\bthis {_WORDS[0]}\b|\b{_WORDS[1]}\b|\b{_WORDS[2]}|"
    r"\bissue #?\d+|\bissues? \d+ and \d+)|"
    + "|".join(rf"{n}\.md" for n in _NOTES) + rf"|{_NOTES[0]} §|\.\./" + "shared")
TEXT = {".py", ".md", ".toml", ".txt", ".json", ".cfg", ".yml", ".yaml", ""}


def tracked_files() -> list[Path]:
    """Tracked files (git), or every file outside hidden and build folders without git."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [ROOT / line for line in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*") if p.is_file()
                and not any(part.startswith(".") or part in ("build", "dist") for part in p.relative_to(ROOT).parts)]


def test_no_tracked_text_refers_to_its_development_or_outside_documents():
    hits = []
    for path in tracked_files():
        if path.suffix not in TEXT or path == Path(__file__).resolve() or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="ignore").splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "the repository must speak only of itself:\n" + "\n".join(hits[:40]) + \
        (f"\n… and {len(hits) - 40} more" if len(hits) > 40 else "")
