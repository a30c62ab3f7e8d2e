"""Tests for minimoe/config.py, presets.py (presets and overrides) and values.py: presets, typed overrides, helpful errors.

Run: python -m pytest tests/test_config.py -q
"""

import dataclasses
import json

import pytest

from minimoe.config import Config
from minimoe.errors import ConfigError
from minimoe.presets import PRESETS, apply_overrides, field_index, get_preset


def test_presets_are_valid_and_frozen():
    for name, cfg in PRESETS.items():
        assert isinstance(cfg, Config), name
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.model.d_model = 1


def test_overrides_are_typed_and_section_free():
    cfg = apply_overrides(PRESETS["tiny"], ["--d_model=48", "--n_heads=3", "--lr=0.01",
                                           "--compile=true", "--selection=softmax", "--train.steps=7"])
    assert cfg.model.d_model == 48 and cfg.model.n_heads == 3
    assert cfg.train.lr == 0.01 and cfg.train.compile is True and cfg.train.steps == 7
    assert cfg.router.selection == "softmax"
    assert PRESETS["tiny"].model.d_model == 32  # the preset itself is untouched


def test_unknown_key_names_the_nearest_valid_key():
    with pytest.raises(ConfigError, match="did you mean 'd_model'"):
        apply_overrides(PRESETS["tiny"], ["--d_modle=64"])
    with pytest.raises(ConfigError, match="did you mean 'n_experts'"):
        apply_overrides(PRESETS["tiny"], {"n_expert": 2})


@pytest.mark.parametrize("override,field", [
    ("--n_heads=5", "n_heads"), ("--tau0=0", "tau0"), ("--tau_min=-1", "tau_min"),
    ("--dropout=1.5", "dropout"), ("--selection=topk", "selection"), ("--steps=-1", "steps"),
    ("--random_top_k=4", "random_top_k"), ("--routing=dense", "n_experts"),
    ("--d_model=abc", "d_model"), ("--compile=maybe", "compile"), ("--device=tpu", "device"),
])
def test_invalid_values_raise_config_error_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        apply_overrides(PRESETS["tiny"], [override])


def test_config_errors_are_value_errors_and_malformed_override_explains_syntax():
    with pytest.raises(ValueError, match="--field=value"):
        apply_overrides(PRESETS["tiny"], ["d_model", "64"])


def test_json_round_trip_and_unknown_preset():
    cfg = apply_overrides(PRESETS["small"], ["--n_experts=4"])
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        get_preset("tinny")


def test_field_names_are_unique_across_sections():
    index = field_index()
    assert len(index) == sum(len(dataclasses.fields(type(getattr(PRESETS["tiny"], s))))
                             for s in ("model", "router", "data", "train"))


def test_two_stage_shares_the_upstream_budget():
    """Every method gets `steps` upstream steps: two-stage splits them."""
    from minimoe.pipeline import method_config, stage_steps

    base = get_preset("repro")
    for steps in (2, 3, 20, 800, 1501):
        cfg = method_config(apply_overrides(base, {"steps": steps}), "two_stage")
        first, second = stage_steps(cfg)
        assert first >= 1 and second >= 1 and first + second == steps
    first, second = stage_steps(method_config(apply_overrides(base, {"steps": 900}), "two_stage"))
    assert (first, second) == (300, 600)  # the paper's 30k + 60k ratio by default
    assert stage_steps(method_config(base, "learned")) == (base.train.steps, 0)
    with pytest.raises(ConfigError, match="steps >= 2"):
        stage_steps(method_config(apply_overrides(base, {"steps": 1}), "two_stage"))
    with pytest.raises(ConfigError, match="stage1_frac"):
        apply_overrides(base, {"stage1_frac": 1.0})
    each = method_config(apply_overrides(base, {"steps": 900, "two_stage_budget": "each"}), "two_stage")
    assert stage_steps(each) == (900, 900)  # the 2× variant (reproduce cell two_stage_2x)


def test_stage2_tau_end_is_checked_and_named():
    base = get_preset("repro")
    assert base.router.stage2_tau_end == 1.0  # the paper's end point is the default
    for bad in (0.0, -1.0, 301.0):
        with pytest.raises(ConfigError, match="stage2_tau_end"):
            apply_overrides(base, {"stage2_tau_end": bad})


@pytest.mark.exercise  # trains a tiny two-stage model
@pytest.mark.parametrize("tau_end", [1.0, 0.1])
def test_stage_two_ends_at_stage2_tau_end(tau_end, tmp_path):
    """Stage 2 anneals τ from stage2_tau0 to stage2_tau_end and leaves the model there, so its
    routes are the frozen router's softmax at that τ."""
    from minimoe.pipeline import make_context, pretrain, train_upstream
    from minimoe.suite import build_suite

    cfg = apply_overrides(get_preset("tiny"), {"steps": 6, "pretrain_steps": 2, "stage2_tau_end": tau_end,
                                               "task_repr": "instruction"})
    ctx = make_context(cfg, build_suite(cfg.data), tmp_path, quiet=True)
    model = train_upstream(ctx, "two_stage", pretrain(ctx))
    assert model.tau == tau_end
