"""Typed recipe loading with LlamaFactory's conventions: `CMD recipe.yaml key=value ...`.

A recipe is a flat YAML mapping (the `### model` / `### method` headers are comments).
Every error names the recipe file, the line and the key. Unknown keys are refused with
the list of known ones, as LlamaFactory's HfArgumentParser does.
"""

import dataclasses
import difflib
import os
import sys
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .errors import UserError

T = TypeVar("T")


def load_yaml_with_lines(path: str | os.PathLike) -> tuple[dict, dict[str, int]]:
    """Parse a flat YAML mapping; return (values, key -> 1-based line number)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if values is None:
        return {}, {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: a recipe must be a mapping of `key: value` lines")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    return values, lines


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`["theta=0.3", "output_dir=a=b"]` -> `{"theta": 0.3, "output_dir": "a=b"}` (split on the first `=`)."""
    out = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        if not sep or not key:
            raise UserError(f"override {arg!r} is not of the form key=value")
        out[key.strip()] = yaml.safe_load(raw) if raw else ""
    return out


def read_args(argv: list[str] | None = None) -> tuple[dict, dict[str, str]]:
    """LlamaFactory-style `recipe.yaml key=value ...` -> (values, key -> "file:line" for errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not argv[0].endswith((".yaml", ".yml")):
        raise UserError("usage: RECIPE.yaml [key=value ...]")
    values, lines = load_yaml_with_lines(argv[0])
    where = {k: f"{argv[0]}:{n}" for k, n in lines.items()}
    overrides = parse_overrides(argv[1:])
    values.update(overrides)
    where.update({k: "command line" for k in overrides})
    return values, where


def _check_type(value: Any, tp: Any) -> Any:
    """Coerce YAML scalars to the field type; raise ValueError with a short reason."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg)
            except ValueError:
                pass
        raise ValueError(f"expected {' or '.join(getattr(a, '__name__', str(a)) for a in args)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(f"expected one of {list(choices)}")
        return value
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [yaml.safe_load(v) for v in value.split(",") if v.strip()]  # `shots=0,2` on a command line
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_check_type(v, item_tp) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError("expected a string")
        return str(value)
    return value


def build_config(cls: type[T], values: dict, where: dict[str, str] | None = None, source: str = "recipe") -> T:
    """Build dataclass `cls` from `values`; unknown keys and bad types name the file and line."""
    where = where or {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(key, fields, n=1)
        hint = f" Did you mean `{near[0]}`?" if near else ""
        raise UserError(
            f"{where.get(key, source)}: unknown key `{key}`.{hint} Known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for key, value in values.items():
        try:
            kwargs[key] = _check_type(value, hints[key])
        except ValueError as err:
            raise UserError(f"{where.get(key, source)}: `{key}: {value!r}`: {err}") from None
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise UserError(f"{source}: missing required key(s): {', '.join(f'`{m}`' for m in missing) or err}") from None
    except ValueError as err:  # __post_init__ rejected a combination
        raise UserError(f"{source}: {err}") from None


def load_config(cls: type[T], argv: list[str] | None = None) -> T:
    values, where = read_args(argv)
    source = (argv or sys.argv[1:])[0]
    return build_config(cls, values, where, source=source)


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def as_config(cls: type[T], cfg: "T | dict | None") -> T:
    """What every step's `main` accepts: a config, a plain dict (tests, `semievol-lf run`), or
    None to read `recipe.yaml key=value ...` from the command line."""
    if isinstance(cfg, dict):
        return build_config(cls, cfg)
    if cfg is None:
        return load_config(cls, sys.argv[1:])
    return cfg
