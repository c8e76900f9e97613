"""Config dataclasses: every field carries help text; load from YAML, override with `key.sub=value`.

Usage::

    cfg = load_config(MyConfig, yaml_path="cfg.yaml", overrides=["train.lr=3e-4", "model.n_layer=2"])
    save_config(cfg, "out/config.json")
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from xomni.cliargs import check_float, check_int, read_text
from xomni.errors import XomniError
from xomni.utils import atomic_write_text


def field(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with mandatory help text (shown by `xomni ... --help-config`)."""
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except XomniError as e:
                errs.append(str(e))
        raise XomniError(errs[0] if errs else f"{where}: bad value {value!r}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise XomniError(f"config {where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        out = [_coerce(v, inner, where) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise XomniError(f"config {where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise XomniError(f"config {where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise XomniError(f"config {where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise XomniError(f"config {where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    f = float(value)
                    if f.is_integer():
                        return int(f)
                except ValueError:
                    pass
        raise XomniError(f"config {where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise XomniError(f"config {where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise XomniError(f"config {where}: expected a string, got {value!r}")
    return value


def _from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        path = f"{where}.{k}" if where else k
        if k not in names:
            raise XomniError(f"config: unknown key '{path}' (valid: {', '.join(sorted(names))})")
        f = names[k]
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict):
            # a partial section keeps the defaults of this field (its default_factory), not the section class's
            if f.default_factory is not dataclasses.MISSING:
                base = dataclasses.asdict(f.default_factory())
            elif f.default is not dataclasses.MISSING and dataclasses.is_dataclass(f.default):
                base = dataclasses.asdict(f.default)
            else:
                base = {}
            _merge(base, v)
            v = base
        kwargs[k] = _coerce(v, hints[k], path)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise XomniError(f"config {where or cls.__name__}: {e}") from None
    _check_finite(obj, hints, where)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def _check_finite(obj: Any, hints: dict, where: str) -> None:
    """No NaN or infinity in any float field (or list of floats) of a config."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        vals = v if isinstance(v, (list, tuple)) else [v]
        if any(isinstance(x, float) and not math.isfinite(x) for x in vals):
            raise XomniError(f"config {where + '.' if where else ''}{f.name} must be finite, got {v!r}")


def in_range(obj: Any, where: str, name: str, lo: float | None = None, hi: float | None = None, *,
             lo_open: bool = False, hi_open: bool = False, zero: str = "") -> None:
    """Config field `name` of `obj` within [lo, hi] (open ends with lo_open/hi_open); `zero` names a documented
    meaning of 0 that is allowed besides the range. Raises one line naming the dotted field."""
    v = getattr(obj, name)
    label = f"config {where + '.' if where else ''}{name}"
    if isinstance(v, int) and not isinstance(v, bool) and not (lo_open or hi_open):
        check_int(v, label, lo, hi, zero=zero)
    elif not (zero and v == 0):
        check_float(v, label, lo, hi, lo_open=lo_open, hi_open=hi_open)


def check_error(where: str, msg: str) -> XomniError:
    """A one-line config error prefixed with the section path."""
    return XomniError(f"config {where + ': ' if where else ''}{msg}")


def _set_path(d: dict, cls: type, dotted: str, raw: str) -> None:
    parts = dotted.split(".")
    cur_cls, cur = cls, d
    for i, p in enumerate(parts):
        names = {f.name for f in dataclasses.fields(cur_cls)}
        if p not in names:
            raise XomniError(f"--set: unknown key '{'.'.join(parts[:i + 1])}' (valid: {', '.join(sorted(names))})")
        tp = typing.get_type_hints(cur_cls)[p]
        if i == len(parts) - 1:
            try:
                val = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                val = raw
            if dataclasses.is_dataclass(tp) and not isinstance(val, dict):
                raise XomniError(f"--set: '{dotted}' is a section, not a value; set its fields, e.g. "
                                 f"{dotted}.{dataclasses.fields(tp)[0].name}=...")
            cur[p] = _coerce(val, tp, dotted) if not dataclasses.is_dataclass(tp) else val
        else:
            if not dataclasses.is_dataclass(tp):
                raise XomniError(f"--set: '{'.'.join(parts[:i + 1])}' is not a section")
            if not isinstance(cur.get(p, {}), dict):
                raise XomniError(f"config: '{'.'.join(parts[:i + 1])}' is a section, not a value "
                                 f"(got {cur[p]!r})")
            cur = cur.setdefault(p, {})
            cur_cls = tp


def load_config(cls: type, yaml_path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> Any:
    """Defaults <- `base` dict <- YAML file <- `key.sub=value` overrides (later wins)."""
    data: dict = json.loads(json.dumps(base)) if base else {}
    if yaml_path:
        p = Path(yaml_path)
        text = read_text(p, "config file")
        try:
            y = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise XomniError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(y, dict):
            raise XomniError(f"config file {p} must contain a mapping at the top level")
        _merge(data, y)
    for ov in overrides or []:
        if "=" not in ov:
            raise XomniError(f"--set expects key.sub=value, got {ov!r}")
        k, v = ov.split("=", 1)
        _set_path(data, cls, k.strip(), v.strip())
    return _from_dict(cls, data)


def _merge(a: dict, b: dict) -> None:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v


def config_from_dict(cls: type, data: Any, source: str | Path | None = None) -> Any:
    """A config from a dict (e.g. a saved model's config.json section); errors name `source` when given."""
    try:
        if not isinstance(data, dict):
            raise XomniError(f"expected a mapping, got {type(data).__name__}")
        return _from_dict(cls, data)
    except XomniError as e:
        if source is None:
            raise
        raise XomniError(f"{source}: {e}") from None


def save_config(cfg: Any, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2, sort_keys=True))


def help_rows(cls: type, prefix: str = "", obj: Any = None) -> list[tuple[str, str, str]]:
    """(dotted name, default, help) for every field, recursing into nested configs. The defaults of a nested config
    are those of its field's default_factory (e.g. a trainer's own TrainConfig defaults), not its class's."""
    rows = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        name = f"{prefix}{f.name}"
        if obj is not None:
            default = getattr(obj, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        if dataclasses.is_dataclass(tp):
            rows.extend(help_rows(tp, name + ".", default if dataclasses.is_dataclass(default) else None))
            continue
        rows.append((name, repr(default), f.metadata.get("help", "")))
    return rows
