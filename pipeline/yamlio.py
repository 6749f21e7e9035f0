"""Reading and merging params files: YAML with duplicate keys refused, deep merge of override files, and the
section helpers the params and rows loaders share. Imports nothing of the project but var.config (torch-free)."""
from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from var.config import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice in one mapping "
                                  f"(first at line {seen[key]}); YAML would silently keep the last")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """A params file as a mapping of sections; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        with open(path) as f:
            raw = yaml.load(f, Loader=_UniqueKeyLoader)     # a SafeLoader: no Python objects are constructed
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    return dict(raw)


def deep_merge(base: Any, over: Any) -> Any:
    """`over` on top of `base`: mappings merge key by key (recursively), anything else replaces."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def load_raw(path: str | Path = "params.yaml", overrides: tuple[str | Path, ...] | list = ()) -> dict:
    """params.yaml with the override files merged over it, in order (the `--configfile` of Snakemake and the CLIs)."""
    raw = read_yaml(path)
    for o in overrides or ():
        raw = deep_merge(raw, read_yaml(o))
    return raw


def section(raw: Mapping, key: str, where: str, valid: tuple[str, ...]) -> Mapping:
    """raw[key] as a mapping (absent or null: empty); with `valid`, unknown keys are an error naming them."""
    val = raw.get(key, {})
    if val is None:
        return {}
    if not isinstance(val, Mapping):
        raise ConfigError(f"params section '{where}' must be a mapping, got {val!r}")
    unknown = sorted(set(val) - set(valid), key=str) if valid else []
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(repr(f'{where}.{k}') for k in unknown)}; "
                          f"valid keys of '{where}': {', '.join(valid)}")
    return val


def seeded(cls: type, mapping: Any, seed: int) -> Any:
    """The top-level `seed` is the default of every section's own `seed` (one knob reseeds the whole run)."""
    if "seed" not in {f.name for f in fields(cls)}:
        return mapping
    if mapping is None:
        return {"seed": seed}
    if isinstance(mapping, Mapping) and "seed" not in mapping:
        return {**mapping, "seed": seed}
    return mapping


def config_difference(seen: Any, files: Any, prefix: str = "") -> list[str]:
    """Dotted keys where `seen` (Snakemake's `config`) differs from the merged files (what the stages read)."""
    if isinstance(seen, Mapping) and isinstance(files, Mapping):
        out = []
        for k in sorted(set(seen) | set(files), key=str):
            key = f"{prefix}{k}"
            if k not in seen or k not in files:
                out.append(key)
            else:
                out += config_difference(seen[k], files[k], key + ".")
        return out
    return [] if seen == files else [prefix.rstrip(".") or "(root)"]
