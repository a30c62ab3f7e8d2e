"""`--field=value` overrides: change a Config from the command line (or a dict), typed by its fields.

`apply_overrides(cfg, ["--d_model=128", "--routing=average"])` returns a new, validated Config.
A key names a field without its section (`--d_model`) or with it (`--model.d_model`); the value
is parsed into the field's type (`minimoe/values.py`); an unknown key gets the nearest valid
name. `field_index` lists every field once, and `field_help` reads each field's reason-comment
from `minimoe/config.py`, so the `--help` of `train_tiny.py` and `minimoe train` is never
written twice. Read next: `minimoe/values.py` (how text becomes a typed value), then
`minimoe/layers.py`.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import fields, replace
from typing import Any

from minimoe.config import SECTIONS, Config
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
