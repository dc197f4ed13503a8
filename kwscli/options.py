"""The flags of `kws teacher` and `kws distill`, generated from the settings in config.py.

A training setting is declared once, as a pydantic field: its YAML key with dashes is its flag
(`train.batch_size` is `--batch-size`; a field may add a short alias, `--lr`), its description
the help, its default and choices what `--help` shows, its bounds the validation. A new field is
a new flag; a flag never maps to the wrong field. Errors about a value given as a flag name the
flag as the user typed it.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typer.core import TyperCommand

from kwscli.config import RunConfig
from kwscli.errors import ConfigError

PANELS = {
    "": "Run",
    "data": "Data",
    "features": "Features (log-mel)",
    "model": "Model (CRNN)",
    "train": "Training",
    "distill": "Distillation",
}
METAVARS = {int: "N", float: "X", str: "TEXT"}


@dataclass(frozen=True)
class Setting:
    """One leaf of RunConfig and its flags."""

    path: tuple[str, ...]  # ("train", "num_epochs")
    field: FieldInfo

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def param(self) -> str:
        """The command's parameter name (field names are unique across sections: checked)."""
        return self.path[-1]

    @property
    def flags(self) -> list[str]:
        extra = self.field.json_schema_extra or {}
        return list(extra.get("flags") or ["--" + self.param.replace("_", "-")])

    @property
    def type(self) -> Any:
        """The value's type for Typer: Optional and constraints stripped."""
        return _plain(self.field.annotation)

    def default_text(self, overrides: dict[str, str]) -> str | None:
        if self.key in overrides:
            return overrides[self.key]
        extra = self.field.json_schema_extra or {}
        if "default_help" in extra:
            return extra["default_help"]
        value = self.field.default
        if value is None:
            return None
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, tuple):
            return " ".join(map(str, value))
        return str(value)


def settings(student: bool) -> list[Setting]:
    """Every leaf setting of a run (a teacher's has no distillation section)."""
    out = []
    for name, field in RunConfig.model_fields.items():
        section = _model_in(field.annotation)
        if section is None:
            out.append(Setting((name,), field))
        elif name != "distill" or student:
            out.extend(Setting((name, n), f) for n, f in section.model_fields.items())
    params = [s.param for s in out]
    assert len(set(params)) == len(params), "two settings share a field name"
    return out


class SettingsCommand(TyperCommand):
    """Keeps the raw arguments, so an error can name the flag as typed (`--lr`, not
    `--learning-rate`)."""

    def parse_args(self, ctx, args):
        ctx.meta["kws.args"] = list(args)
        return super().parse_args(ctx, args)


def with_settings(student: bool, defaults: dict[str, str] | None = None):
    """Decorator: adds one keyword parameter per setting to a Typer command and calls it with
    `overrides`, the nested dict of settings given as flags (None = not given)."""

    def wrap(fn):
        specs = settings(student)
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(fn, eval_str=True).parameters.values()
            if p.name != "overrides"
        ]
        generated = [
            inspect.Parameter(
                s.param,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=_option(s, defaults or {}),
            )
            for s in specs
        ]

        context = inspect.Parameter(
            "kws_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
        )  # Typer passes the click context here: the raw arguments, for `_name_flags`

        @functools.wraps(fn)
        def command(kws_context: typer.Context, **kw):
            args = kws_context.meta.get("kws.args", [])
            overrides: dict[str, Any] = {}
            given = {}
            for s in specs:
                value = kw.pop(s.param)
                if value is not None:
                    _put(overrides, s.path, value.value if isinstance(value, Enum) else value)
                    given[s.key] = s
            try:
                return fn(overrides=overrides, **kw)
            except ConfigError as exc:
                raise ConfigError(_name_flags(str(exc), given, args)) from None

        command.__signature__ = inspect.Signature([context, *own, *generated])
        command.__annotations__ = {}
        return command

    return wrap


def _option(s: Setting, defaults: dict[str, str]):
    t = s.type
    extra = s.field.json_schema_extra or {}
    kw: dict[str, Any] = {
        "help": s.field.description,
        "rich_help_panel": PANELS[s.path[0] if len(s.path) > 1 else ""],
        "show_default": s.default_text(defaults) or False,
    }
    decls = s.flags
    if t is bool:
        decls = [f"{decls[0]}/--no-{decls[0][2:]}"]
        kw["metavar"] = ""
    elif isinstance(t, type) and issubclass(t, Enum):
        kw["case_sensitive"] = False
    elif get_origin(t) is tuple:
        kw["metavar"] = extra.get("metavar", "F T")
    else:
        kw["metavar"] = extra.get("metavar", METAVARS.get(t, "VALUE"))
    return Annotated[t | None, typer.Option(*decls, **kw)]


def _name_flags(message: str, given: dict[str, Setting], args: list[str]) -> str:
    """`train.learning_rate: …` → `--lr: …` for a setting given as a flag (as typed)."""
    lines = []
    for line in message.splitlines():
        for key, s in given.items():
            if re.match(re.escape(key) + r"(\[\d+\])?: ", line):
                typed = next(
                    (f for f in s.flags if any(a == f or a.startswith(f + "=") for a in args)),
                    s.flags[0],
                )
                line = typed + line[len(key) :]
                break
        lines.append(line)
    return "\n".join(lines)


def _put(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _model_in(annotation) -> type[BaseModel] | None:
    for t in (annotation, *get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _plain(annotation):
    """`int | None` → int; `tuple[Annotated[int, …], Annotated[int, …]]` → tuple[int, int]."""
    if get_origin(annotation) is Annotated:
        return _plain(get_args(annotation)[0])
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is tuple:
        return tuple[tuple(_plain(a) for a in args)]
    if len(args) == 1 and type(None) in get_args(annotation):
        return _plain(args[0])
    return annotation
