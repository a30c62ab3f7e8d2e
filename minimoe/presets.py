"""Where a run's Config comes from: a named preset, then `--field=value` overrides on top.

Presets are named Configs, each override with the reason it was chosen (measured where it says so):

- `tiny`: for tests, a model that runs a forward pass in milliseconds;
- `small`: for `train_tiny.py`, the whole pipeline in about two minutes on 2 CPU cores;
- `repro`: for `minimoe reproduce`, `small` with fewer steps so that every cell and seed fits.

`train_tiny.py`, `minimoe train` and `minimoe reproduce` start from a preset (`--preset`) and
apply overrides: `apply_overrides(cfg, ["--d_model=128", "--routing=average"])` returns a new,
validated Config. A key names a field without its section (`--d_model`) or with it
(`--model.d_model`); the value is parsed into the field's type (`minimoe/values.py`); an unknown
key gets the nearest valid name. `field_index` lists every field once, and `field_help` reads
each field's reason-comment from `minimoe/config.py`, so the `--help` of `train_tiny.py` and
`minimoe train` is never written twice. Read next: `minimoe/values.py` (how text becomes a typed
value), then `minimoe/layers.py`.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import fields, replace
from typing import Any

from minimoe.config import SECTIONS, Config, DataConfig, ModelConfig, RouterConfig, TrainConfig
from minimoe.errors import ConfigError, nearest
from minimoe.values import coerce


def field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """Map every field name to (section, Field). Names are unique across sections."""
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, kind in SECTIONS.items():
        for f in fields(kind):
            assert f.name not in index, f"field {f.name} appears in two sections"  # developer error
            index[f.name] = (section, f)
    return index


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, Any]) -> Config:
    """Return cfg with `--field=value` strings (or a {field: value} dict) applied.

    >>> apply_overrides(Config(), ["--d_model=32", "--n_heads=2"]).model.d_model
    32
    """
    index = field_index()
    pairs = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    changes: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in pairs:
        prefix, _, name = key.rpartition(".")
        if name not in index:
            raise ConfigError(f"unknown config key '{key}'{nearest(name, index)}")
        section, _ = index[name]
        if prefix and prefix != section:
            raise ConfigError(f"config key '{key}': {name} is in section '{section}', not '{prefix}'; "
                              f"write --{section}.{name} or just --{name}.")
        changes[section][name] = coerce(name, value, getattr(getattr(cfg, section), name))
    parts = {s: replace(getattr(cfg, s), **c) for s, c in changes.items()}
    return Config(**parts)


def _split(arg: str) -> tuple[str, str]:
    if not arg.startswith("--") or "=" not in arg:
        raise ConfigError(f"override {arg!r} must look like --field=value (e.g. --d_model=128).")
    key, value = arg[2:].split("=", 1)
    return key, value


def field_help() -> dict[str, str]:
    """Each field's reason-comment from config.py's source, for `--help` (one source of truth)."""
    helps: dict[str, str] = {}
    for kind in SECTIONS.values():
        for line in inspect.getsource(kind).splitlines():
            m = re.match(r"\s+(\w+): [^=]+=[^#]*#\s*(.*)", line)
            if m:
                helps[m.group(1)] = m.group(2)
    return helps


# --- presets -----------------------------------------------------------------------------------

PRESETS: dict[str, Config] = {
    # For tests: a model that runs a forward pass in milliseconds.
    "tiny": Config(
        model=ModelConfig(d_model=32, n_heads=2, d_ff=64, n_enc_layers=1, n_dec_layers=1, max_len=48),
        router=RouterConfig(d_task=16, d_router_hidden=16),
        data=DataConfig(n_entities=16, n_upstream=64, n_test=32),
        train=TrainConfig(steps=20, pretrain_steps=10, batch_size=16, eval_every=10, out="runs/test"),
    ),
    # For train_tiny.py: the whole pipeline in about two minutes on 2 CPU cores (the
    # measurements behind each choice: lesson 06, "The small preset"). Reasons:
    # - lr 3e-3 and 1,500 steps: a lower rate or fewer steps leaves seen tasks unlearned;
    # - softmax routing: at these steps it learns faster than straight-through Gumbel and its
    #   routes group tasks by skill;
    # - threads 1: at d 64 a second thread gains little and contends with other processes;
    # - few-shot: one lr, 40 steps, so that 21 unseen tasks fit in the budget.
    "small": Config(
        router=RouterConfig(selection="softmax"),
        train=TrainConfig(lr=3e-3, steps=1500, pretrain_steps=300, eval_every=150, fs_steps=40,
                          fs_lrs="1e-3"),
    ),
}
# For `minimoe reproduce`: 9 cells × 3 upstream seeds × 21 unseen tasks × 5 data seeds must fit in
# about 45 minutes on 2 cores (2 processes), so upstream and few-shot steps are cut. The price:
# at 800 steps the methods are still learning; they level off by 2,400 (`--set steps=2400`;
# about an hour per 3 seeds on 2 cores: lessons/results/plateau/).
PRESETS["repro"] = apply_overrides(PRESETS["small"], {"steps": 800, "fs_steps": 25, "eval_every": 100})


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'{nearest(name, PRESETS)}")
    return PRESETS[name]
