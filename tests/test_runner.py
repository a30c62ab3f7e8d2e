"""End-to-end tests of one run (minimoe/runner.py, train_tiny.py, `minimoe train`).

A tiny run (seconds) must produce every file of the run directory — config.json,
metrics.jsonl, routes.npy, figures/*.png (non-empty), report.md, summary.json; resuming a
finished run recomputes nothing and gives the same summary; a second run into a used
directory without --resume is refused; `--help` lists every config field; the held-out loss
recorded at every checkpoint (the eval curve) leaves training exactly as it was; the run ends
with a short summary, not the report.
Run: python -m pytest tests/test_runner.py -q
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minimoe.errors import ConfigError, DeviceError
from minimoe.presets import apply_overrides, field_index, get_preset
from minimoe.pipeline import make_context, pretrain, train_upstream
from minimoe.runner import build_parser, config_from_args, run, summary_lines
from minimoe.snapshots import held_out_history
from minimoe.suite import build_suite

pytestmark = pytest.mark.exercise  # runs the whole model (see tests/test_model.py)

TINY = {"steps": 12, "pretrain_steps": 6, "eval_every": 6, "fs_steps": 2, "fs_lrs": "1e-3",
        "n_upstream": 16, "n_test": 8, "k_per_class": 2, "k_other": 4}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = apply_overrides(get_preset("tiny"), dict(TINY, out=str(out)))
    summary = run(cfg, "learned", quiet=True, log=lambda *a: None)
    return cfg, out, summary


def test_run_directory_has_every_file(tiny_run):
    cfg, out, summary = tiny_run
    assert json.loads((out / "config.json").read_text())["model"]["d_model"] == cfg.model.d_model
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r.get("stage") for r in records} >= {"pretrain", "learned"}
    assert sum(r.get("kind") == "score" for r in records) == 51  # every task scored once
    routes = np.load(out / "routes.npy")
    assert routes.ndim == 3 and np.allclose(routes.sum(-1), 1.0)
    for name in ("loss.png", "routes.png", "route_dynamics.png"):
        png = out / "figures" / name
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "## Seen tasks" in report and "## Expert usage per task and layer" in report
    assert json.loads((out / "summary.json").read_text())["method"] == "learned"
    assert 0.0 <= summary["seen_mean"] <= 1.0 and "few_shot_mean" in summary


def test_resume_of_a_finished_run_reuses_checkpoints(tiny_run):
    cfg, out, summary = tiny_run
    again = run(cfg, "learned", resume=True, quiet=True, log=lambda *a: None)
    for key in ("seen_mean", "zero_shot_mean", "few_shot_mean"):
        assert again[key] == summary[key]


def test_used_directory_needs_resume(tiny_run):
    cfg, out, _ = tiny_run
    with pytest.raises(ConfigError, match="--resume"):
        run(cfg, "learned", quiet=True, log=lambda *a: None)


def test_resume_with_another_model_config_is_refused(tiny_run):
    cfg, out, _ = tiny_run
    other = apply_overrides(cfg, {"d_ff": cfg.model.d_ff * 2})
    with pytest.raises(Exception, match="d_ff"):
        run(other, "learned", resume=True, quiet=True, log=lambda *a: None)


def test_help_lists_every_option_and_overrides_parse():
    parser = build_parser("train_tiny.py", "test")
    text = parser.format_help()
    for name in field_index():
        assert f"--{name}" in text, name
    assert "(default: None)" not in text  # each config flag names the preset's value once
    assert "(default: 64)" in text  # d_model of the small preset
    args = parser.parse_args(["--preset=tiny", "--steps=5", "--seed=3", "--device=cpu", "--compile=false"])
    cfg = config_from_args(args)
    assert (cfg.train.steps, cfg.train.seed, cfg.train.device, cfg.train.compile) == (5, 3, "cpu", False)


def test_train_tiny_script_reports_config_errors_without_traceback():
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "train_tiny.py"), "--n_heads=5"],
                          capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 2
    assert "n_heads" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("method", ["learned", "token"])  # token: its auxiliary losses must not leak
def test_held_out_curve_leaves_training_unchanged(tmp_path, method):
    """Evaluating at every checkpoint draws no random numbers and leaves the model in train
    mode: the losses equal those of a run without it, and the file has one point per checkpoint."""
    cfg = apply_overrides(get_preset("tiny"), TINY)
    suite, histories = build_suite(cfg.data), []
    for track in (False, True):
        ctx = make_context(cfg, suite, tmp_path / str(track), quiet=True)
        ctx.track_held_out = track
        train_upstream(ctx, method, pretrain(ctx))
        histories.append(ctx.histories[method])
    assert histories[0] == histories[1]
    curve = held_out_history(tmp_path / "True")[method]
    assert [step for step, _ in curve] == [6, 12] and all(0 < loss < 20 for _, loss in curve)
    assert held_out_history(tmp_path / "False") == {}


def test_run_ends_with_a_short_summary(tiny_run):
    cfg, out, summary = tiny_run
    lines = summary_lines(summary, out)
    assert 3 <= len(lines) <= 6
    assert "seen" in lines[0] and "zero-shot" in lines[0] and "few-shot" in lines[0]
    assert "skills" in lines[1] and "categories" in lines[1]
    assert str(out / "report.md") in lines[2] and "route_dynamics.png" in lines[3]
    assert len(held_out_history(out)["learned"]) == 2  # steps 6 and 12


@pytest.mark.parametrize("method,override,kind,error", [("twostage", {}, ConfigError, "unknown method 'twostage'"),
                                                        ("learned", {"device": "cuda:7"}, DeviceError, "cuda")])
def test_a_mistake_is_the_only_output_and_writes_nothing(tmp_path, method, override, kind, error):
    """Method and device are checked before the resolved config is printed and before --out exists."""
    import torch

    if override and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    logged: list[str] = []
    cfg = apply_overrides(get_preset("tiny"), {"out": str(tmp_path / "run"), **override})
    with pytest.raises(kind, match=error):
        run(cfg, method=method, log=logged.append)
    assert logged == [] and not (tmp_path / "run").exists()
