"""Plain dicts (YAML, Hydra) <-> nested config dataclasses, with checked keys and types.

Unknown keys fail with the valid keys of their section and the closest matches, so a typo such as
``actor.optim.lrr`` is caught before a run starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping


class ConfigKeyError(KeyError):
    """A config key that the schema does not have (the message lists the valid ones)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


def from_dict(cls: type, data: Mapping[str, Any] | None, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; missing keys keep their defaults, unknown keys raise."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigKeyError(_unknown_key_message(cls, path, key))
    kwargs = {key: _coerce(value, hints[key], _join(path, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:  # a section from below the trainer (e.g. SparseConfig) names its fields bare
        if not path or str(e).startswith(path.split(".")[0]):
            raise
        raise ValueError(f"{path}.{e}") from None


def defaults_dict(cls: type) -> dict[str, Any]:
    """The defaults of ``cls`` as plain containers, without constructing (and validating) it."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = to_plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = to_plain(f.default_factory())  # type: ignore[misc]
        else:
            out[f.name] = None
    return out


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and mappings as dicts and lists (what YAML and OmegaConf hold)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def valid_keys(cls: type, path: str = "") -> list[str]:
    """Every leaf key of ``cls`` as a dotted path (``actor.optim.lr``); dict-valued fields end the path."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = _dataclass_in(hints[f.name])
        keys.extend(valid_keys(inner, _join(path, f.name)) if inner else [_join(path, f.name)])
    return keys


def check_key(cls: type, dotted: str) -> None:
    """Raise ``ConfigKeyError`` when ``dotted`` is not a key of ``cls`` (keys inside dict fields pass)."""
    section, path = cls, ""
    for part in dotted.split("."):
        if section is None:  # inside a free-form dict field
            return
        hints = typing.get_type_hints(section)
        if part not in hints:
            raise ConfigKeyError(_unknown_key_message(section, path, part))
        section, path = _dataclass_in(hints[part]), _join(path, part)


def _unknown_key_message(cls: type, path: str, key: str) -> str:
    here = [f.name for f in dataclasses.fields(cls)]
    full = _join(path, key)
    moved = getattr(cls, "MOVED_KEYS", {}).get(key)  # a section may list keys that moved elsewhere
    if moved:
        return f"config key {full!r} moved to {moved!r}: use {moved}=..."
    close = difflib.get_close_matches(key, here, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(_join(path, c)) for c in close)}?" if close else ""
    section = f"'{path}'" if path else "the top level"
    return f"unknown config key {full!r}.{hint} Valid keys at {section}: {', '.join(here)}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _dataclass_in(hint: Any) -> type | None:
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """``value`` checked against the type ``hint`` (int, float, bool, str, Optional, tuple, list, dict, dataclass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, path)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(errors[0] if len(errors) == 1 else f"{path}={value!r} matches none of {hint}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"{path} must be a mapping of {hint.__name__} fields, got {value!r}")
        return from_dict(hint, value, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}={value!r} must be a list")
        item = args[0] if args else Any
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        items = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"{path}={value!r} must be a mapping")
        return {str(k): to_plain(v) for k, v in value.items()}
    return _coerce_scalar(value, hint, path)


def _coerce_scalar(value: Any, hint: Any, path: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{path}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError(f"{path}={value!r} must be an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"{path}={value!r} must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a numeric experiment name given on the command line
        raise TypeError(f"{path}={value!r} must be a string")
    return value
