"""Tests for minimoe/archive.py: packing a study's cell files and unpacking them is lossless.

Run: python -m pytest tests/test_archive.py -q
"""

import json

import pytest

from minimoe.archive import PACKED, pack, read_cells, unpack
from minimoe.errors import DataError


def test_pack_unpack_round_trip_and_read_either_layout(tmp_path):
    study = tmp_path / "study"
    cells = {(s, c): {"name": c, "seed": s, "few_shot": {"t": [0.1 * s]}} for s in (0, 3) for c in ("dense", "average")}
    for (s, c), cell in cells.items():
        (study / f"seed{s}").mkdir(parents=True, exist_ok=True)
        (study / f"seed{s}" / f"{c}.json").write_text(json.dumps(cell))
    (study / "config.json").write_text("{}")
    before = read_cells(study)
    pack(study)
    assert (study / PACKED).is_file() and not list(study.glob("seed*"))
    assert read_cells(study) == before == {c: {s: cells[(s, c)] for s in (0, 3)} for c in ("dense", "average")}
    first = (study / PACKED).read_bytes()
    unpack(study, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "seed3" / "average.json").read_text()) == cells[(3, "average")]
    assert (tmp_path / "out" / "config.json").is_file()
    pack(tmp_path / "out")
    assert (tmp_path / "out" / PACKED).read_bytes() == first  # deterministic bytes: no churn in git


def test_pack_refuses_a_folder_without_cells(tmp_path):
    with pytest.raises(DataError, match="no seed\\*/\\*.json"):
        pack(tmp_path)
