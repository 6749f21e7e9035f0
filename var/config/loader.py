"""The one strict loader of every config dataclass, and the valid ranges of their numeric fields.

A component's hyperparameters live in one frozen dataclass built from its `params.yaml` section by `build_config`,
which rejects unknown keys and names them (a misspelled key must never be silently ignored), checks types against
the annotations, and checks every numeric field against the range declared with `param(...)` (NaN and infinity
are never valid). Derived sizes are properties of the dataclasses, so they cannot be set inconsistently.
This module imports no torch: validating a params file must be cheap (`snakemake -n` does it).
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Mapping


class ConfigError(ValueError):
    """A params section has an unknown, missing, ill-typed or out-of-range key."""


# ------------------------------------------------------------------------------------------------ ranges
@dataclass(frozen=True)
class Range:
    """A closed/open interval for a numeric field (or each item of a numeric tuple), plus special values that mean
    'use the default' (e.g. -1)."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    special: tuple[float, ...] = ()

    def contains(self, x: float) -> bool:
        if x in self.special:
            return True
        if isinstance(x, float) and not math.isfinite(x):
            return False
        return ((self.ge is None or x >= self.ge) and (self.gt is None or x > self.gt)
                and (self.le is None or x <= self.le) and (self.lt is None or x < self.lt))

    def __str__(self) -> str:
        lo = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else "(-inf"
        hi = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else "inf)"
        text = f"{lo}, {hi}"
        return text + "".join(f" or {s:g}" for s in self.special)


def param(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, special: tuple[float, ...] = (),
          choices: tuple | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its valid range (numbers; for tuples, every item) or its valid choices (strings).

    `special` lists sentinel values accepted outside the range (e.g. `-1` = 'the reference's default')."""
    meta: dict[str, Any] = {}
    if any(v is not None for v in (ge, gt, le, lt)) or special:
        meta["range"] = Range(ge, gt, le, lt, tuple(special))
    if choices is not None:
        meta["choices"] = tuple(choices)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_FULL_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: Any, key: str) -> str:
    """Validate a params value of `<path key>_sha256`: '' (not pinned) or the full digest, 64 hex digits."""
    if not isinstance(value, str) or (value and not _FULL_SHA256.fullmatch(value.lower())):
        raise ValueError(f"{key} must be the file's full sha256 (64 hex digits) or empty, got {value!r}")
    return value.lower()


def field_range(cls: type, name: str) -> Range | None:
    return next(f.metadata.get("range") for f in dataclasses.fields(cls) if f.name == name)


class Config:
    """Base of the config dataclasses: direct construction checks the declared ranges too (`build_config` checks
    them first, naming the full params key). Subclasses with their own __post_init__ call super().__post_init__()."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            try:
                _check_value(f, getattr(self, f.name), f.name)
            except ConfigError as e:
                raise ValueError(str(e)) from None


def _check_value(f: dataclasses.Field, value: Any, where: str) -> None:
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where} = {value!r}: must be one of {', '.join(repr(c) for c in choices)}")
    rng = f.metadata.get("range")
    items = value if isinstance(value, (tuple, list)) else (value,)
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            continue
        if isinstance(x, float) and not math.isfinite(x) and (rng is None or x not in rng.special):
            raise ConfigError(f"{where} = {value!r}: must be a finite number")
        if rng is not None and not rng.contains(x):
            raise ConfigError(f"{where} = {value!r}: must be in {rng}")


# ------------------------------------------------------------------------------------------------ loading
def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _nested_default(f: dataclasses.Field, tp: Any, base: Any) -> Any:
    """The default a nested config section's missing keys take: the enclosing default's (or `base`'s) value of it,
    so a section that embeds a config with its own defaults (`sample.sampler`) keeps them key by key."""
    if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        return None
    if base is not None:
        return getattr(base, f.name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _moved_hint(cls: type, hints: dict, key: Any, section: str) -> str:
    """' (it belongs under 'sample.sampler': ...)' when an unknown key is a key of a nested section."""
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and key in {g.name for g in dataclasses.fields(tp)}:
            return f" ('{section}.{key}' belongs under '{section}.{f.name}': '{section}.{f.name}.{key}')"
    return ""


def build_config(cls: type, mapping: Mapping[str, Any] | None, section: str, base: Any = None):
    """Build the frozen dataclass `cls` from `mapping` (one params.yaml section).

    Unknown keys raise ConfigError naming the key, the section and the valid keys; values are type-checked
    against the dataclass annotations and range-checked against their `param(...)` ranges. Missing keys take the
    dataclass default, or `base`'s value (an instance of `cls`) when given; a nested section given in part keeps
    the enclosing default's values of the keys it leaves out.
    """
    if mapping is None:
        mapping = {}
    if dataclasses.is_dataclass(mapping):
        return mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"params section '{section}' must be a mapping, got {type(mapping).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(repr(f'{section}.{k}') for k in unknown)}; "
            f"valid keys of '{section}': {', '.join(sorted(fields))}"
            + "".join(_moved_hint(cls, hints, k, section) for k in unknown)
        )
    kwargs = {}
    for k, v in mapping.items():
        nested = _nested_default(fields[k], hints[k], base) if isinstance(v, Mapping) else None
        kwargs[k] = (build_config(hints[k], v, f"{section}.{k}", nested) if nested is not None
                     else _coerce(v, hints[k], f"{section}.{k}"))
    for k, v in kwargs.items():
        _check_value(fields[k], v, f"{section}.{k}")
    if base is not None:
        kwargs = {**{n: getattr(base, n) for n in fields}, **kwargs}
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(repr(f'{section}.{k}') for k in missing)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params section '{section}': {e}") from e


def config_to_dict(cfg) -> dict:
    """A plain, YAML/JSON/torch.save-safe dict (tuples become lists)."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}
