"""Command-line flags generated from a run's frozen dataclass: one configuration source.

A run's settings are a frozen, keyword-only dataclass; each field is one flag of the same name,
its help text in the field's metadata (`option`). The parser is built from the fields, so a
field and its flag cannot drift apart, and a run built in Python (`Settings(...)`,
`dataclasses.replace`) and one built from the command line are the same object.

>>> @dataclasses.dataclass(frozen=True, kw_only=True)
... class Settings:
...   task: str = option(help="registered seqio Task or Mixture")
...   steps: int = option(100, help="training steps")
...   rate: Optional[float] = option(None, help="peak learning rate")
...   pack: bool = option(True, help="pack examples")
...   cache_dirs: Tuple[str, ...] = option((), help="seqio cache directories")
...   overrides: Mapping[str, str] = option({}, help="config fields", metavar="FIELD=VALUE")
>>> parse(Settings, ["--task", "t", "--steps", "5", "--no_pack", "--cache_dirs", "a", "b",
...                  "--overrides", "num_layers=3"])
Settings(task='t', steps=5, rate=None, pack=False, cache_dirs=('a', 'b'), overrides={'num_layers': '3'})
>>> to_argv(Settings(task="t", steps=5))
['--task', 't', '--steps', '5']

Flag forms: `--name VALUE`; booleans `--name` / `--no_name`; tuples take values and may repeat
(`--cache_dirs a b --cache_dirs c`; `--cache_dirs` alone is empty), and with a `separator` also
split them (`--tasks=a,b`); mappings repeat `--name KEY=VALUE`. A field
without a default is a required flag. Standard library only (a CLI's `--help` starts no
TensorFlow or JAX).
"""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import types
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar  # noqa: F401

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, *, help: str,  # pylint: disable=redefined-builtin
           metavar: Optional[str] = None, choices: Optional[Sequence[Any]] = None,
           separator: Optional[str] = None) -> Any:
  """A dataclass field that is also a flag: its default, help text, metavar and choices.

  Mutable defaults (`{}`, `[]`) are copied per instance (a `default_factory`). `separator`
  (sequences only): each value is also split on it, so `--tasks=a,b` is `--tasks a b`.

  >>> @dataclasses.dataclass(frozen=True, kw_only=True)
  ... class Job:
  ...   tasks: Tuple[str, ...] = option((), help="task regexes", separator=",")
  >>> parse(Job, ["--tasks=a,b", "--tasks", "c"])
  Job(tasks=('a', 'b', 'c'))
  """
  metadata = {"help": help, "metavar": metavar, "choices": choices, "separator": separator}
  if isinstance(default, (dict, list)):
    value = default
    return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def _unwrap_optional(tp) -> Tuple[Any, bool]:
  """Optional[int] -> (int, True); int -> (int, False)."""
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1:
      return args[0], True
  return tp, False


def _kind(tp) -> Tuple[str, Any]:
  """('scalar', int) | ('bool', bool) | ('sequence', str) | ('mapping', str)."""
  tp, _ = _unwrap_optional(tp)
  origin = typing.get_origin(tp)
  if tp is bool:
    return "bool", bool
  if origin in (tuple, list, collections.abc.Sequence):
    args = [a for a in typing.get_args(tp) if a is not Ellipsis]
    return "sequence", (args[0] if args else str)
  if origin in (dict, collections.abc.Mapping):
    args = typing.get_args(tp)
    return "mapping", (args[1] if len(args) == 2 else str)
  if tp in (str, int, float):
    return "scalar", tp
  raise TypeError(f"field type {tp!r} has no flag form (str, int, float, bool, Optional of "
                  "those, Tuple[X, ...], Mapping[str, X])")


def _fields(cls) -> List[Tuple[dataclasses.Field, Any]]:
  hints = typing.get_type_hints(cls)
  return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _default(f: dataclasses.Field) -> Any:
  if f.default is not _MISSING:
    return f.default
  if f.default_factory is not _MISSING:  # type: ignore[misc]
    return f.default_factory()  # type: ignore[misc]
  return _MISSING


def add_flags(parser: argparse.ArgumentParser, cls: Type[Any]) -> argparse.ArgumentParser:
  """Adds one flag per field of the dataclass `cls` to `parser` (see the module docstring)."""
  for f, tp in _fields(cls):
    meta = f.metadata
    help_text = meta.get("help", "")
    default = _default(f)
    required = default is _MISSING
    kind, item_type = _kind(tp)
    name = f"--{f.name}"
    common = dict(dest=f.name, help=help_text + ("" if required else f" (default: {default!r})"))
    if kind == "bool":
      group = parser.add_mutually_exclusive_group()
      group.add_argument(name, action="store_true", **common)
      group.add_argument(f"--no_{f.name}", dest=f.name, action="store_false",
                         help=f"the opposite of {name}")
      parser.set_defaults(**{f.name: default})
    elif kind == "sequence":
      parser.add_argument(name, action="extend", nargs="*", default=None,
                          type=str if meta.get("separator") else item_type,
                          metavar=meta.get("metavar") or f.name.upper().rstrip("S"),
                          choices=meta.get("choices"), required=required, **common)
    elif kind == "mapping":
      parser.add_argument(name, action="append", default=None, required=required,
                          metavar=meta.get("metavar") or "KEY=VALUE", **common)
    else:
      parser.add_argument(name, type=item_type, default=None if required else default,
                          required=required, metavar=meta.get("metavar"),
                          choices=meta.get("choices"), **common)
  return parser


def build_parser(cls: Type[Any], *, prog: Optional[str] = None,
                 description: Optional[str] = None) -> argparse.ArgumentParser:
  """An `argparse.ArgumentParser` whose flags are the fields of the dataclass `cls`."""
  parser = argparse.ArgumentParser(prog=prog, description=description)
  return add_flags(parser, cls)


def from_namespace(cls: Type[T], ns: argparse.Namespace) -> T:
  """The dataclass instance of parsed flags (tuples as tuples, `KEY=VALUE` lists as dicts)."""
  values: Dict[str, Any] = {}
  for f, tp in _fields(cls):
    value = getattr(ns, f.name)
    kind, item_type = _kind(tp)
    if kind == "sequence":
      if value is None:
        continue   # the field's default
      sep = f.metadata.get("separator")
      if sep:
        value = [piece for v in value for piece in str(v).split(sep) if piece]
        value = [item_type(v) for v in value]
      value = tuple(value) if typing.get_origin(_unwrap_optional(tp)[0]) is not list else list(value)
    elif kind == "mapping":
      if value is None:
        continue
      pairs = {}
      for item in value:
        key, sep, raw = item.partition("=")
        if not sep or not key:
          raise ValueError(f"--{f.name} {item!r}: expected KEY=VALUE")
        pairs[key] = item_type(raw)
      value = pairs
    values[f.name] = value
  return cls(**values)


def parse(cls: Type[T], argv: Optional[Sequence[str]] = None, *, prog: Optional[str] = None,
          description: Optional[str] = None) -> T:
  """`from_namespace(cls, build_parser(cls).parse_args(argv))`; a bad `KEY=VALUE` is a usage
  error (exit 2) naming the flag, as argparse reports its own."""
  parser = build_parser(cls, prog=prog, description=description)
  ns = parser.parse_args(argv)
  try:
    return from_namespace(cls, ns)
  except ValueError as e:
    parser.error(str(e))
    raise  # unreachable: parser.error exits


def to_argv(settings: Any) -> List[str]:
  """The flags that rebuild `settings` (fields equal to their default are left out), e.g. to
  start the same run in another process."""
  argv: List[str] = []
  for f, tp in _fields(type(settings)):
    value = getattr(settings, f.name)
    default = _default(f)
    if default is not _MISSING and value == default:
      continue
    kind, _ = _kind(tp)
    if kind == "bool":
      argv.append(f"--{f.name}" if value else f"--no_{f.name}")
    elif value is None:
      raise ValueError(f"{f.name}=None differs from its default {default!r} and has no flag form")
    elif kind == "sequence" and f.metadata.get("separator") and value:
      # One `--name=a,b`: a value may start with "--" (Beam options), which argparse would
      # take for a flag if it came on its own.
      argv.append(f"--{f.name}=" + f.metadata["separator"].join(map(str, value)))
    elif kind == "sequence":
      argv += [f"--{f.name}", *map(str, value)]   # `--name` alone: empty
    elif kind == "mapping":
      for key, item in value.items():
        argv += [f"--{f.name}", f"{key}={item}"]
    else:
      argv += [f"--{f.name}", str(value)]
  return argv
