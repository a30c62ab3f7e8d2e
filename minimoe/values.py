"""A config value in its field's type and within its field's rule: text parsed, JSON checked.

Two readers hand values to the config sections: `Config.from_dict` (a `config.json`, where a
hand-edited file may hold "64" as text, or 1 for a float: `section_values`) and `apply_overrides`
(`--d_model=128`, always text). Both convert through `coerce`, so a value is accepted or refused
the same way everywhere, and a wrong type is a `ConfigError` naming the field and an example
value, not a TypeError deep inside a run. The sections' rules (`__post_init__` in
`minimoe/config.py`) raise through `check` and `choice`. Read next: `minimoe/layers.py` (the
model, from attention up).
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import fields
from typing import Any

from minimoe.errors import ConfigError, nearest


def _parse_value(raw: str, current: Any, key: str) -> Any:
    """Parse a command-line string into the type of the field's current value."""
    kind = type(current)
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ConfigError(f"--{key}={raw!r} is not a valid {kind.__name__}; e.g. --{key}={current!r}.") from None


def coerce(key: str, value: Any, current: Any) -> Any:
    """value as the type of the field's current value: text is parsed as on the command line,
    an int is accepted for a float; anything else (None, a list, a float for an int) is a ConfigError."""
    kind = type(current)
    if isinstance(value, str) and kind is not str:
        return _parse_value(value, current, key)
    if kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if type(value) is kind or (kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        return kind(value)
    raise ConfigError(f"{key}={value!r} has type {type(value).__name__}, but {key} must be "
                      f"{kind.__name__}; e.g. {key}={current!r}.")


def check(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ok — the one validation helper (no bare asserts)."""
    if not ok:
        raise ConfigError(message)


def choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        near = difflib.get_close_matches(str(value), options, n=1)
        hint = f" Did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"{name}={value!r} is not one of {options}.{hint} Set --{name}=<one of these>.")


def section_values(name: str, kind: type, given: Any) -> dict[str, Any]:
    """The fields of config section `name` (dataclass `kind`) from a config.json object, each in
    its field's type; not an object, an unknown key or a wrong type is a ConfigError naming it."""
    check(isinstance(given, dict), f"config section {name!r} must be an object of "
          f"field: value pairs, not {type(given).__name__}.")
    defaults = {f.name: f.default for f in fields(kind)}
    for key in given:
        check(key in defaults, f"unknown key {name}.{key}{nearest(key, defaults)}")
    return {k: coerce(k, v, defaults[k]) for k, v in given.items()}
