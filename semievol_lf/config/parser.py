"""Recipe parsing with LlamaFactory's conventions: `CMD RECIPE.yaml key=value ...` -> one typed dataclass.

A recipe is a flat YAML mapping (the `### model` / `### method` headers are comments). Overrides
on the command line come after it, in any of these forms, applied left to right:

    key=value   --key value   --key=value   --flag (= true)   key.sub=value (one entry of a mapping)

A value is read as YAML (`shots=[0, 2]`, `backend_args={base_url: URL}`), a list also as
`shots=0,2`; a value that is not YAML stays a plain string, as OmegaConf (LlamaFactory's
`read_args`) keeps it, except an unclosed `[`/`{`, which is refused. The flat dict is routed
into the dataclass by field name, as HfArgumentParser routes it: unknown keys are refused with
a did-you-mean and the known ones, a renamed key (RENAMED) with its new name. Every mistake is one
UserError naming the recipe file and line (or `command line`) and the key; `--help` prints every
field with its type, default and help.

Not handled here: which keys a step needs together (each dataclass's `__post_init__` says that).
"""

import dataclasses
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ..errors import UserError, closest

T = TypeVar("T")
COMMAND_LINE = "command line"
OVERRIDE_FORMS = "key=value | --key value | --key=value | key.sub=value"
# Keys that were renamed, per config class: (class name, old key) -> new key. An old key is refused with
# its new name (`recipes/x.yaml:12: `run_dir` was renamed `output_dir``), never silently read.
RENAMED = {
    ("RunArguments", "run_dir"): "output_dir",  # every command writes its `output_dir`
    ("MeteorArguments", "meteor_dir"): "output_dir",
    ("MeteorArguments", "k"): "num_samples",  # `k` is SemiEvol's ICP neighbours
    ("MeteorArguments", "max_iterations"): "max_revisions",  # SemiEvol's rounds are `iterations`
    ("MeteorArguments", "high_compute"): "preference_rule",  # stage 3 ranks the greedy answer and samples by one rule
    ("MeteorArguments", "low_max_new_tokens"): "max_new_tokens",  # every answer has the same length limit
}


# --------------------------------------------------------------------------------------------- reading

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
        raise UserError(f"{where}: not valid YAML ({_one_line(getattr(err, 'problem', err))})") from None
    if values is None:
        return {}, {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: a recipe must be a mapping of `key: value` lines")
    lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    return {str(k): v for k, v in values.items()}, lines


_OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")


def split_overrides(args: list[str]) -> list[tuple[str, str]]:
    """The command line's overrides as (key, raw value), in order.

    `["theta=0.3", "--k", "2", "--out=a=b", "--rag", "n=2"]`
    -> `[("theta", "0.3"), ("k", "2"), ("out", "a=b"), ("rag", "true"), ("n", "2")]`

    `--key` followed by another `--key` or a `key=value` (or nothing) is a bare flag, as
    HfArgumentParser reads `--do_train`; a value that itself looks like `key=value` needs `--key=...`.
    """
    pairs, i = [], 0
    while i < len(args):
        arg, i = args[i], i + 1
        if arg.startswith("--"):
            key, sep, raw = arg[2:].partition("=")
            if not sep:
                if i < len(args) and not args[i].startswith("--") and not _OVERRIDE.match(args[i]):
                    raw, i = args[i], i + 1
                else:
                    raw = "true"
        else:
            key, sep, raw = arg.partition("=")
            if not sep:
                raise UserError(f"override {arg!r} is not of the form key=value (or --key value)")
        key = key.strip()
        if not key or not all(key.split(".")):
            raise UserError(f"override {arg!r} has no key: write key=value")
        pairs.append((key, raw))
    return pairs


def parse_value(key: str, raw: str) -> Any:
    """One override's value: YAML, or the plain string when it is not YAML.

    `"0.3"` -> 0.3, `"[0, 2]"` -> [0, 2], `"a: b: c"` -> "a: b: c", `"[llama3"` -> UserError
    """
    if raw == "":
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        if raw.lstrip().startswith(("[", "{")):  # meant as a list or mapping: a typo, not a string
            raise UserError(f"{COMMAND_LINE}: `{key}={raw}`: not a valid YAML list or mapping "
                            f"({_one_line(getattr(err, 'problem', err))}); quote the whole value to pass a string, "
                            f"e.g. {key}='\"{raw}\"'") from None
        return raw


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`["theta=0.25", "output_dir=a=b"]` -> `{"theta": 0.25, "output_dir": "a=b"}` (split on the first `=`;
    dotted keys are merged into their mapping)."""
    values: dict[str, Any] = {}
    apply_overrides(values, {}, split_overrides(args))
    return values


def apply_overrides(values: dict, where: dict[str, str], pairs: list[tuple[str, str]]) -> None:
    """Set each (key, raw) in `values`; `a.b.c=v` deep-merges into the mapping `a`, as OmegaConf does."""
    for key, raw in pairs:
        value = parse_value(key, raw)
        root, *path = key.split(".")
        where[root] = COMMAND_LINE
        if not path:
            values[root] = value
            continue
        node = values.get(root)
        node = values[root] = {} if node is None else dict(node) if isinstance(node, dict) else node
        for depth, part in enumerate(path):
            if not isinstance(node, dict):
                parent = ".".join([root, *path[:depth]])
                raise UserError(f"{COMMAND_LINE}: `{key}`: `{parent}` is {node!r}, not a mapping")
            if depth == len(path) - 1:
                node[part] = value
            else:
                child = node.get(part)
                node[part] = {} if child is None else dict(child) if isinstance(child, dict) else child
                node = node[part]


def wants_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def read_args(argv: list[str] | None = None) -> tuple[dict, dict[str, str]]:
    """LlamaFactory-style `recipe.yaml key=value ...` -> (values, key -> "file:line" or "command line")."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not argv[0].endswith((".yaml", ".yml")):
        raise UserError(f"usage: RECIPE.yaml [{OVERRIDE_FORMS} ...]; --help lists the keys")
    values, lines = load_yaml_with_lines(argv[0])
    where = {k: f"{argv[0]}:{n}" for k, n in lines.items()}
    apply_overrides(values, where, split_overrides(argv[1:]))
    return values, where


# --------------------------------------------------------------------------------------------- types

def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def check_value(value: Any, tp: Any) -> Any:
    """Coerce a YAML value to the field type; raise ValueError with a short reason.

    `check_value(2, float)` -> 2.0, `check_value("0,2", list[int])` -> [0, 2], `check_value("x", int)` -> ValueError
    """
    origin = typing.get_origin(tp)
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_value(value, arg)
            except ValueError:
                pass
        raise ValueError(f"expected {' or '.join(type_name(a) for a in args)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            near = did_you_mean(str(value), [str(c) for c in choices])
            raise ValueError(f"expected one of {list(choices)}.{near}".rstrip("."))
        return value
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):  # `shots=0,2` on a command line
            value = [_scalar(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [check_value(v, item_tp) for v in value]
    if tp is dict or origin is dict:
        if value is None:  # `backend_args:` with nothing after it
            return {}
        if not isinstance(value, dict):
            raise ValueError("expected a mapping, e.g. {key: value}")
        return dict(value)
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


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def type_name(tp: Any) -> str:
    """`list[Literal["base", "warm"]]` -> "list of {base, warm}", `int | None` -> "int or null"."""
    if tp is type(None):
        return "null"
    if _is_union(tp):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "{" + ", ".join(str(c) if c != "" else "''" for c in typing.get_args(tp)) + "}"
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return f"list of {type_name(item)}"
    if tp is dict or origin is dict:
        return "mapping"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(tp, getattr(tp, "__name__", str(tp)))


def did_you_mean(name: str, known) -> str:
    """`did_you_mean("thetta", ["theta", "k"])` -> " Did you mean `theta`?" ("" when nothing is close)."""
    near = closest(name, known)
    return f" Did you mean `{near}`?" if near else ""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------- building

def build_nested(cls: type[T], values: dict, key: str, context: str = "") -> T:
    """A typed mapping inside a recipe key (`backend_args`, `data_sizes`): unknown keys and bad types raise
    ValueError naming `key.sub`; `cls.__post_init__` may raise ValueError for bad values."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for sub, value in values.items():
        sub = str(sub)
        if sub not in fields:
            raise ValueError(f"`{key}.{sub}`: unknown key{context}.{did_you_mean(sub, fields)} "
                             f"Known keys: {', '.join(sorted(fields))}")
        try:
            kwargs[sub] = check_value(value, hints[sub])
        except ValueError as err:
            raise ValueError(f"`{key}.{sub}: {value!r}`: {err}") from None
    return cls(**kwargs)


_KEY_IN_MESSAGE = re.compile(r"`([A-Za-z_][\w]*)")


def _located(message: str, where: dict[str, str], source: str) -> str:
    """Prefix a `__post_init__` message with where its first named key was set."""
    for key in _KEY_IN_MESSAGE.findall(message):
        if key in where:
            return f"{where[key]}: {message}"
    return f"{source}: {message}"


def build_config(cls: type[T], values: dict, where: dict[str, str] | None = None, source: str = "recipe") -> T:
    """Build dataclass `cls` from a flat dict, routing each key to the field of its name; unknown keys
    and bad types name the file and line."""
    where = where or {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values = {str(k): v for k, v in values.items()}
    unknown = sorted((k for k in values if k not in fields), key=lambda k: (cls.__name__, k) not in RENAMED)
    if unknown:
        key = unknown[0]  # a renamed key first: its message says exactly what to write
        renamed = RENAMED.get((cls.__name__, key))
        if renamed:
            raise UserError(f"{where.get(key, source)}: `{key}` was renamed `{renamed}`")
        raise UserError(f"{where.get(key, source)}: unknown key `{key}`.{did_you_mean(key, fields)} "
                        f"Known keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for key, value in values.items():
        try:
            kwargs[key] = check_value(value, hints[key])
        except ValueError as err:
            raise UserError(f"{where.get(key, source)}: `{key}: {value!r}`: {err}") from None
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise UserError(f"{source}: missing required key(s): {', '.join(f'`{m}`' for m in missing) or err}") from None
    except ValueError as err:  # __post_init__ rejected a value or a combination
        raise UserError(_located(_one_line(err), where, source)) from None


def load_config(cls: type[T], argv: list[str] | None = None, prog: str | None = None) -> T:
    """`RECIPE.yaml key=value ...` -> `cls`; `--help` prints every field and exits 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        print(format_help(cls, prog))
        raise SystemExit(0)
    values, where = read_args(argv)
    return build_config(cls, values, where, source=argv[0])


def as_config(cls: type[T], cfg: "T | dict | None", prog: str | None = None) -> T:
    """What every step's `main` accepts: a config, a plain dict (tests, `semievol-lf run`), or
    None to read `recipe.yaml key=value ...` from the command line."""
    if isinstance(cfg, dict):
        return build_config(cls, cfg)
    if cfg is None:
        return load_config(cls, sys.argv[1:], prog)
    return cfg


# --------------------------------------------------------------------------------------------- help

SECTION_ORDER = ["model", "dataset", "method", "inference", "output", "train"]  # a recipe's `###` order


def _sections(cls: type) -> list[tuple[str, list[dataclasses.Field]]]:
    """The fields of `cls` grouped by the part that declares them (or their `section` metadata)."""
    owner: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for name in vars(klass).get("__annotations__", {}):
            owner[name] = getattr(klass, "SECTION", "") or klass.__name__
    groups: dict[str, list[dataclasses.Field]] = {}
    for f in dataclasses.fields(cls):
        if f.init:
            groups.setdefault(f.metadata.get("section") or owner.get(f.name, cls.__name__), []).append(f)
    rank = {name: i for i, name in enumerate(SECTION_ORDER)}
    return sorted(groups.items(), key=lambda item: rank.get(item[0], len(rank)))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def format_fields(cls: type, indent: str = "  ", only: set[str] | None = None) -> list[str]:
    """`name: type = default` and the help text below it, for every field of `cls` (or those in `only`)."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init or (only is not None and f.name not in only):
            continue
        lines.append(f"{indent}{f.name}: {type_name(hints[f.name])} = {_default(f)}")
        if f.metadata.get("help"):
            lines.append(f"{indent}    {f.metadata['help']}")
    return lines


def format_help(cls: type, prog: str | None = None) -> str:
    """`--help`: usage, the class docstring, then every field by section, then the typed mappings."""
    prog = prog or getattr(cls, "PROG", None) or Path(sys.argv[0]).name
    doc = (cls.__doc__ or "").strip()
    out = [f"usage: {prog} RECIPE.yaml [{OVERRIDE_FORMS} ...]", ""]
    if doc:
        out += [doc, ""]
    out += ["Every key below can be set in the recipe or overridden on the command line; lists as shots=0,2",
            "or shots='[0, 2]', mappings as backend_args='{dtype: float16}' or backend_args.dtype=float16.", ""]
    hints = typing.get_type_hints(cls)
    for section, fields in _sections(cls):
        out.append(f"### {section}")
        for f in fields:
            out.append(f"  {f.name}: {type_name(hints[f.name])} = {_default(f)}")
            if f.metadata.get("help"):
                out.append(f"      {f.metadata['help']}")
        out.append("")
    for title, nested in getattr(cls, "nested_help", list)():
        out.append(f"### {title}")
        out += format_fields(nested)
        out.append("")
    return "\n".join(out).rstrip("\n")
