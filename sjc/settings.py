"""Settings as typed dataclasses whose fields carry their own help, bounds and command-line form.

One mechanism serves every command: `setting()` declares a field (default, help, bounds, choices), `add_flags`
turns a dataclass into argparse flags, `from_flags` / `apply_flags` read them back, and `check` holds every
value (from the command line or a JSON file) to its declared type and bounds, failing with one line that names
the flag. A dataclass may add `relations(self)`: (condition, message) pairs between its fields.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import MISSING, Field
from typing import Any, Iterator, Optional

from .errors import SJCError


def setting(default: Any = MISSING, help: str = "", *, factory=MISSING, min=None, max=None, gt=None, lt=None,
            choices=None, flag: Optional[str] = None, positional: bool = False, nargs=None, metavar=None,
            cli: bool = True, **extra) -> Field:
    """A dataclass field with its command-line form: help text, bounds (min ≤ v ≤ max, gt < v < lt), choices,
    a flag name other than --field-name, positional, nargs ('+', '*' or '?'), and cli=False for none.

    Extra keywords are kept in the field's metadata for the dataclass's own use (e.g. how a value is resolved).
    """
    meta = {"help": help, "min": min, "max": max, "gt": gt, "lt": lt, "choices": choices, "flag": flag,
            "positional": positional, "nargs": nargs, "metavar": metavar, "cli": cli, **extra}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_name(f: Field) -> str:
    """A field's command-line flag: grid_size → --grid-size (or the one its setting names); a positional's name."""
    if f.metadata.get("positional"):
        return f.name
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def leaves(obj, prefix: str = "") -> Iterator[tuple[str, Any, Field]]:
    """(dotted path, the object holding it, field) for every leaf setting of a dataclass instance, its sections
    recursed into: 'guidance.sigma_min', or 'prior' at the top level."""
    for f in dataclasses.fields(obj):
        if dataclasses.is_dataclass(field_type(type(obj), f)):
            yield from leaves(getattr(obj, f.name), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", obj, f


def class_leaves(cls, prefix: str = "") -> Iterator[tuple[str, type, Field]]:
    """(dotted path, the class declaring it, field) for every leaf setting of a settings dataclass."""
    for f in dataclasses.fields(cls):
        t = field_type(cls, f)
        if dataclasses.is_dataclass(t):
            yield from class_leaves(t, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", cls, f


# ------------------------------------------------------------------------------------------ types

_HINTS: dict[type, dict] = {}


def field_type(cls, f: Field):
    """A field's annotation, resolved (the modules here write annotations as strings)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls][f.name]


def base_type(cls, f: Field) -> tuple[type, bool, bool]:
    """(the scalar type, whether None is allowed, whether it is a list of them) of a field's annotation."""
    t = field_type(cls, f)
    optional = False
    if typing.get_origin(t) is typing.Union:
        args = [a for a in typing.get_args(t) if a is not type(None)]
        optional, t = True, args[0]
    many = typing.get_origin(t) in (list, tuple)
    if many:
        t = typing.get_args(t)[0]
    return t, optional, many


TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def _type_ok(value, t) -> bool:
    t = typing.get_origin(t) or t   # dict[str, Any] → dict
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, t)


# ------------------------------------------------------------------------------------------ checks


def check_value(cls, f: Field, value, name: Optional[str] = None, bounds: bool = True) -> None:
    """One line if `value` breaks the type, bounds or choices of field `f` of `cls` (`name`: how to call it in
    the message, default its flag; bounds=False checks the type alone)."""
    name = name or flag_name(f)
    t, optional, many = base_type(cls, f)
    if value is None:
        if optional or f.metadata.get("nargs") == "?":
            return
        raise SJCError(f"{name} must be {TYPE_WORDS.get(t, t.__name__)}, got nothing")
    values = value if many else [value]
    if many and not isinstance(value, (list, tuple)):
        raise SJCError(f"{name} must be a list of {TYPE_WORDS.get(t, t.__name__)} values, got {value!r}")
    m = f.metadata
    for v in values:
        if not _type_ok(v, t):
            raise SJCError(f"{name} must be {TYPE_WORDS.get(t, t.__name__)}, got {_short(v)}")
        if t is float and not math.isfinite(v):
            raise SJCError(f"{name} must be a finite number, got {v}")
        if not bounds:
            continue
        if m.get("choices") is not None and v not in m["choices"]:
            raise SJCError(f"unknown {name} {_short(v)}; choose one of {', '.join(map(str, m['choices']))}")
        if m.get("gt") == 0 and not v > 0:
            raise SJCError(f"{name} must be a positive number ({name} > 0), got {v}")
        if m.get("gt") is not None and not v > m["gt"]:
            raise SJCError(f"{name} must be greater than {m['gt']}, got {v}")
        if m.get("lt") is not None and not v < m["lt"]:
            raise SJCError(f"{name} must be less than {m['lt']}, got {v}")
        lo, hi = m.get("min"), m.get("max")
        if lo == 1 and hi is None and not v >= 1:
            raise SJCError(f"{name} must be a positive number, got {v}")
        if lo is not None and hi is not None and not lo <= v <= hi:
            raise SJCError(f"{name} must lie in [{lo:g}, {hi:g}], got {v}")
        if lo is not None and not v >= lo:
            raise SJCError(f"{name} must be at least {lo}, got {v}")
        if hi is not None and not v <= hi:
            raise SJCError(f"{name} must be at most {hi}, got {v}")


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "…"


def check(obj, where: str = "", bounds: bool = True) -> Any:
    """Every leaf of a settings dataclass holds a value of its type within its bounds, and every section's
    relations hold; otherwise one SJCError line (prefixed by `where`, e.g. a config file's path).
    bounds=False checks the types alone."""
    try:
        for _, owner, f in leaves(obj):
            check_value(type(owner), f, getattr(owner, f.name), bounds=bounds)
        for section in _sections(obj) if bounds else ():
            for ok, message in section.relations() if hasattr(section, "relations") else ():
                if not ok:
                    raise SJCError(message)
    except SJCError as e:
        raise SJCError(f"{where}: {e}" if where else str(e)) from None
    return obj


def _sections(obj) -> Iterator[Any]:
    """Every nested section of a dataclass, innermost first, then the dataclass itself."""
    for f in dataclasses.fields(obj):
        if dataclasses.is_dataclass(field_type(type(obj), f)):
            yield from _sections(getattr(obj, f.name))
    yield obj


# ------------------------------------------------------------------------------------------ flags


def add_flags(parser: argparse.ArgumentParser, cls, *, only=None, exclude=(), groups: bool = False) -> None:
    """One argparse flag per leaf setting of `cls` (recursing into sections), but those in `exclude` and those
    not in `only` (field names); each flag's default is None ('not given'), so `from_flags` can tell.

    groups: one help section per section of `cls` (its docstring as the description).
    """
    seen, sections = set(), {}
    for path, owner, f in class_leaves(cls):
        if not f.metadata.get("cli", True) or f.name in exclude or (only is not None and f.name not in only):
            continue
        if f.name in seen:
            raise ValueError(f"two settings named {f.name} would share the flag {flag_name(f)}")
        seen.add(f.name)
        target = parser
        if groups and "." in path:
            section = path.rpartition(".")[0]
            if section not in sections:
                sections[section] = parser.add_argument_group(f"{section} settings", (owner.__doc__ or "").strip())
            target = sections[section]
        t, _, many = base_type(owner, f)
        m = f.metadata
        kw: dict = {"help": argparse.SUPPRESS if m.get("help") == argparse.SUPPRESS else _help(f, many).replace("%", "%%")}
        if m.get("metavar"):
            kw["metavar"] = m["metavar"]
        if t is bool and not many:
            kw["action"] = "store_true" if m.get("switch") else argparse.BooleanOptionalAction
        else:
            kw["type"] = _parse_as(t, flag_name(f))
            if many or m.get("nargs"):
                kw["nargs"] = m.get("nargs") or "+"
        if m.get("positional"):
            target.add_argument(f.name, default=None, **kw)
        else:
            target.add_argument(flag_name(f), dest=f.name, default=None, **kw)


def _help(f: Field, many: bool) -> str:
    """A flag's help: its setting's text, its choices, and its default (the prior's, for settings left to it)."""
    m = f.metadata
    text = m.get("help") or f.name.replace("_", " ")
    if m.get("choices") and not all(str(c) in text for c in m["choices"]):
        text += f" ({'|'.join(map(str, m['choices']))})"
    default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                          else None)
    if m.get("prior"):
        return text if "unset:" in text else text + " (default: the prior's; sjc generate --help lists them)"
    if default in (None, "") or default is False and m.get("switch"):
        return text
    return text + f" (default {' '.join(map(str, default)) if many else default})"


def _parse_as(t: type, flag: str):
    """argparse's type for a scalar: int/float/str parsed, with a one-line error naming the flag."""
    if t is str:
        return str

    def parse(text: str):
        try:
            return t(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {TYPE_WORDS[t]}, got {text!r}") from None
    parse.__name__ = t.__name__
    return parse


def given_flags(cls, ns: argparse.Namespace) -> dict[str, Any]:
    """{dotted path: value} of the settings of `cls` that were given on the command line (lists as the field's
    own container type)."""
    given = {}
    for path, owner, f in class_leaves(cls):
        value = getattr(ns, f.name, None)
        if not f.metadata.get("cli", True) or value is None or (value == [] and f.metadata.get("positional")):
            continue
        if isinstance(value, list):
            t = field_type(owner, f)
            if typing.get_origin(t) is typing.Union:   # Optional[tuple[...]]
                t = next(a for a in typing.get_args(t) if a is not type(None))
            value = tuple(value) if typing.get_origin(t) is tuple else value
        given[path] = value
    return given


def apply_flags(obj, ns: argparse.Namespace) -> set[str]:
    """Copy the settings given on the command line into `obj`; return their paths."""
    given = given_flags(type(obj), ns)
    owners = {path: owner for path, owner, _ in leaves(obj)}
    for path, value in given.items():
        setattr(owners[path], path.rpartition(".")[2], value)
    return set(given)


def from_flags(cls, ns: argparse.Namespace, where: str = ""):
    """A flat settings dataclass from the command line (its defaults where a flag was not given), checked."""
    return check(cls(**given_flags(cls, ns)), where)


def reference_table(cls) -> str:
    """A Markdown table of a settings dataclass's flags: section, default, allowed values and help."""
    rows = ["| flag | section | default | allowed | what |", "|---|---|---|---|---|"]
    for path, owner, f in class_leaves(cls):
        if not f.metadata.get("cli", True):
            continue
        m, (t, _, _) = f.metadata, base_type(owner, f)
        default = f.default if f.default is not MISSING else None
        default = "the prior's" if m.get("prior") else "unset" if default is None else f"`{default}`"
        allowed = ([" \\| ".join(map(str, m["choices"]))] if m.get("choices") else []) + \
                  [f"{op} {_number(m[k])}" for k, op in (("min", "≥"), ("gt", ">"), ("max", "≤"), ("lt", "<"))
                   if m.get(k) is not None]
        what = (m.get("help") or "").replace("|", "\\|")
        name = flag_name(f) + (" / --no-" + flag_name(f)[2:] if t is bool else "")
        rows.append(f"| `{name}` | {path.rpartition('.')[0] or '—'} | {default} | "
                    f"{', '.join(allowed) or TYPE_WORDS.get(t, '')} | {what} |")
    return "\n".join(rows) + "\n"


def _number(v) -> str:
    """A bound as written: 2^62 for a large power of two, else as Python prints it."""
    if isinstance(v, int) and v >= 2 ** 32 and v & (v - 1) == 0:
        return f"2^{v.bit_length() - 1}"
    return f"{v:g}" if isinstance(v, float) else str(v)
