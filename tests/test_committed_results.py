"""The committed results regenerate: every `lessons/results/**/results.json` equals the tables
that the committed code builds from the committed cells, and each study's own script (beside its
cells) regenerates its table — the committed results were produced by the committed code.

No model is trained: each study's `config.json` and packed cells (`cells.jsonl.gz`,
`minimoe/archive.py`) are unpacked to a temp folder and `minimoe.reproduce.reproduce` rebuilds
the tables from them, with the seeds, data seeds and cells that the committed `results.json` lists. Everything but where and when it ran
(`wall_seconds`, `command`, `machine`) must match, to rounding.
Run: python -m pytest tests/test_committed_results.py -q
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from minimoe.archive import unpack
from minimoe.config import Config, read_config
from minimoe.reproduce import reproduce

RESULTS = Path(__file__).resolve().parent.parent / "lessons" / "results"
STUDIES = sorted(p.parent for p in RESULTS.rglob("results.json") if (p.parent / "config.json").is_file())
# Studies that rebuild in seconds, one of each design (pooled seeds, a split per seed, FFN
# experts, interference groups, budgets): CI rebuilds these (.ci/run); the others take a minute
# or more each (many seeds, stratified permutation tests) and run only on demand.
CI_STUDIES = ("budget/steps1600", "budget/steps2400", "conflict_dense_long", "ffn", "interference/pilot",
              "interference/pilot_ffn", "relatedness0", "resplit/xeon_dense")
WHERE_AND_WHEN = ("wall_seconds", "command", "machine")


def assert_close(rebuilt, committed, where: str = "results") -> None:
    """Equal JSON trees, floats to 1e-9 relative (the statistics are seeded; only the last bit
    of a sum may differ between numpy builds)."""
    if isinstance(committed, dict):
        assert set(rebuilt) == set(committed), f"{where}: keys {sorted(set(rebuilt) ^ set(committed))}"
        for key in committed:
            assert_close(rebuilt[key], committed[key], f"{where}.{key}")
    elif isinstance(committed, list):
        assert len(rebuilt) == len(committed), where
        for i, (a, b) in enumerate(zip(rebuilt, committed)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(committed, float):
        assert rebuilt == pytest.approx(committed, rel=1e-9, abs=1e-12, nan_ok=True), where
    else:
        assert rebuilt == committed, where


def test_every_study_is_found():
    names = {str(p.relative_to(RESULTS)) for p in STUDIES}
    assert set(CI_STUDIES) <= names, "CI_STUDIES names a study that does not exist"
    assert {".", "plateau", "plateau10", "plateau10_epyc", "d32", "d128", "ffn", "relatedness0",
            "conflict", "conflict_dense_long", "conflict_long", "resplit", "resplit/xeon", "resplit/xeon_dense",
            "resplit/replication", "resplit/replication2", "resplit/replication3"} <= names, names


@pytest.mark.slow  # ≈ 10–30 s per study (permutation tests, swap nulls, figures)
@pytest.mark.exercise  # rebuilds ARG (exercises 7.2, 7.3) and route statistics (8.1, 8.2)
@pytest.mark.parametrize("study", [
    pytest.param(p, marks=pytest.mark.ci if str(p.relative_to(RESULTS)) in CI_STUDIES else ())
    for p in STUDIES], ids=lambda p: str(p.relative_to(RESULTS)))
def test_committed_tables_regenerate_from_committed_cells(study, tmp_path):
    committed = json.loads((study / "results.json").read_text())
    seeds, cells = tuple(committed["upstream_seeds"]), tuple(committed["seen_mean"])
    unpack(study, tmp_path)
    for seed in seeds:
        for cell in cells:  # a missing cell file would make reproduce train it: fail loudly instead
            assert (tmp_path / f"seed{seed}" / f"{cell}.json").is_file(), \
                f"{study}: cell {cell} of seed {seed} is missing: the committed tables cannot be rebuilt"
    cfg = read_config(study / "config.json")
    rebuilt = reproduce(cfg, tmp_path, seeds, tuple(committed["data_seeds"]), cells, quiet=True,
                        resplit=committed.get("split_per_seed", False))
    rebuilt = json.loads(json.dumps(rebuilt))  # the same JSON types as the committed file
    for key in WHERE_AND_WHEN:
        rebuilt.pop(key, None), committed.pop(key, None)
    # Config fields added after a run read as their defaults (as in minimoe/checkpoint.py::science).
    committed["config"] = Config.from_dict(committed["config"]).to_dict()
    assert_close(rebuilt, committed)
    assert not list(tmp_path.glob("seed*/pretrain.pt")), "a rebuild must train nothing"


@pytest.mark.slow  # ≈ 10 s each: endpoints per group and a permutation test
@pytest.mark.exercise  # ARG (exercises 7.2, 7.3) and permutation tests (8.2)
@pytest.mark.parametrize("script, table, args", [
    ("conflict/analyze.py", "conflict/analysis.json", []),
    ("conflict/analyze.py", "conflict_long/analysis.json", ["--cells", str(RESULTS / "conflict_long")]),
    ("conflict_dense_long/compare.py", "conflict_dense_long/comparison.json", []),
    ("d128/analyze.py", "d128/analysis.json", []),
    ("power_beyond_skills/power.py", "power_beyond_skills/power.json", [])])
def test_study_scripts_regenerate_their_tables(script, table, args, tmp_path):
    """A study's own analysis (beside its cells) is what its committed script computes from them."""
    run = subprocess.run([sys.executable, str(RESULTS / script), *args, "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"{script} failed:\n{run.stderr[-2000:]}"
    assert_close(json.loads((tmp_path / Path(table).name).read_text()),
                 json.loads((RESULTS / table).read_text()), table)
