"""Configuration sections that check themselves when built.

A section is a dataclass whose fields are declared with `setting(...)`: a default, and
what a valid value is (a type from the annotation, a range, a list of choices). The
choices of a switch can name a registry ("tmkd_core.fusion:WEIGHTINGS"), so that the
valid values are whatever is registered, never a list repeated by hand. A wrong type
(`"2"` for an int), a value out of range or an unknown choice raises `ConfigError` at
once, naming the setting and what would have been valid, before anything trains.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import types
import typing
from dataclasses import MISSING, field, fields
from typing import Any, Callable, Sequence


class ConfigError(ValueError):
    """An invalid setting; the message names it (dotted path) and what is valid."""


def setting(default: Any = MISSING, *, default_factory: Callable[[], Any] | Any = MISSING,
            choices: Sequence[str] | str | None = None, ge: float | None = None, gt: float | None = None,
            lt: float | None = None, le: float | None = None, neutral: bool = False, added: bool = False,
            doc: str = ""):
    """A dataclass field with its validity rule.

    `choices`: a tuple of values, or "module:REGISTRY" whose registered names are the
    values. `neutral=True` marks a setting that cannot change any number (where files
    live, progress bars, worker counts): it enters no cache key. `added=True` marks a
    setting added after artefacts were keyed whose default is what they ran with: at its
    default it enters no key, so those artefacts stay valid. Its default is therefore
    frozen: changing it later would let artefacts made under the old one pass for new.
    """
    meta = {"choices": choices, "ge": ge, "gt": gt, "lt": lt, "le": le, "neutral": neutral, "added": added,
            "doc": doc}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def resolve_choices(choices: Sequence[str] | str) -> tuple[str, ...]:
    """The valid values of a switch: a literal tuple, or the names in a registry."""
    if isinstance(choices, str):
        module, attr = choices.split(":")
        source = getattr(importlib.import_module(module), attr)
        return tuple(source.names()) if hasattr(source, "names") else tuple(source)
    return tuple(choices)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(name: str, value: Any, tp) -> Any:
    """`value` checked against the annotation `tp` (and converted where lossless: int -> float,
    list -> tuple), or ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        return _coerce(name, value, others[0]) if len(others) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r} ({type(value).__name__})")
        item = typing.get_args(tp)[0]
        return tuple(_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, tp):
            raise ConfigError(f"{name} is a section ({tp.__name__}), got {value!r}; set its fields instead "
                              f"(e.g. {name}.{fields(tp)[0].name}=...)")
        return value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def _check_rule(name: str, value: Any, meta: dict) -> None:
    if value is None:
        return
    if meta.get("choices") is not None:
        valid = resolve_choices(meta["choices"])
        for v in (value if isinstance(value, tuple) else (value,)):
            if v not in valid:
                raise ConfigError(f"{name}: invalid value {v!r}; valid values: {', '.join(map(str, valid))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be finite, got {value}")
        for key, ok, word in (("ge", lambda b: value >= b, ">="), ("gt", lambda b: value > b, ">"),
                              ("le", lambda b: value <= b, "<="), ("lt", lambda b: value < b, "<")):
            bound = meta.get(key)
            if bound is not None and not ok(bound):
                raise ConfigError(f"{name}: must be {word} {bound}, got {value}")


@functools.lru_cache(maxsize=None)
def type_hints(cls) -> typing.Mapping[str, Any]:
    """`typing.get_type_hints` once per class, read only: resolving the string annotations
    each time a section is built was most of the time a plan took to enumerate its tasks."""
    return types.MappingProxyType(typing.get_type_hints(cls))


class Section:
    """Base of every configuration section: validates and normalises its fields on creation."""

    def __post_init__(self):
        hints = type_hints(type(self))
        for f in fields(self):
            name = f"{type(self).__name__}.{f.name}"
            value = _coerce(name, getattr(self, f.name), hints[f.name])
            _check_rule(name, value, dict(f.metadata))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules that involve several fields of the section."""


def leaf_paths(section_type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every (dotted path, field) of a section tree that holds a value, not a section."""
    hints = type_hints(section_type)
    out = []
    for f in fields(section_type):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += leaf_paths(tp, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", f))
    return out


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def section_type(section_type_, name: str):
    """The dataclass type of the sub-section `name` of `section_type_`, or None for a value."""
    tp = type_hints(section_type_).get(name)
    return tp if tp is not None and dataclasses.is_dataclass(tp) else None
