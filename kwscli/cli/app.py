"""The `kws` Typer app and what every command shares: the one red line an error becomes (a
traceback with --debug), the root options (--debug, -q, --version), the options several commands
take, and `main`. The commands themselves are in the modules beside this one, by what they work
on; kwscli/cli/__init__.py registers them in that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from kwscli.errors import KwsError

_state = {"debug": False}


class _Group(TyperGroup):
    """Turns the core's KwsError and a usage error (an unknown choice, a missing argument) into
    one red line and its exit code (a traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KwsError as exc:
            if _state["debug"]:
                raise
            from kwscli.distributed import RankError

            fail(str(exc), exc.exit_code, every_rank=isinstance(exc, RankError))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:  # `kws ... | head`: the reader has what it wanted
            from kwscli.report import drop_stdout

            drop_stdout()
            raise typer.Exit(0) from None
        except Exception as exc:
            if _state["debug"]:
                raise
            if _is_usage_error(exc):
                command = " ".join(["kws", *exc.ctx.command_path.split()[1:]]) if exc.ctx else ""
                where = f" (see {command} --help)" if command else ""
                fail(exc.format_message().replace("Value error, ", "") + where, 2)
            # exits and help belong to click/typer; anything else is a bug in kws
            if type(exc).__module__.split(".")[0] in ("click", "typer"):
                raise
            from kwscli.report import internal_error

            fail(internal_error(exc), every_rank=True)

    def format_help(self, ctx, formatter):
        _readable_metavars(self, ctx)
        return super().format_help(ctx, formatter)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _readable_metavars(command, ctx)
        return command


# what --help shows for a value whose command declares no metavar (Typer's default is the Python
# type: <list[Path]>, <str>, <bool>)
_METAVARS = {"Path": "PATH", "str": "TEXT", "float": "X", "int": "N", "bool": ""}


def _readable_metavars(command, ctx) -> None:
    import typing

    for param in [*getattr(command, "params", []), command.get_help_option(ctx)]:
        if param is None or param.metavar is not None:
            continue
        if param.param_type_name == "argument":  # its name says it; the help says the rest
            param.display_type_rich = lambda ctx: None
            continue
        kind = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        kinds = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
        name = getattr(typing.get_origin(kinds[0]) or kinds[0], "__name__", "")
        if name in _METAVARS:
            param.metavar = _METAVARS[name]


def _is_usage_error(exc: Exception) -> bool:
    """click's UsageError and its kinds (typer vendors click, so matched by name), but not
    NoArgsIsHelpError, which is the help text of a command run with no arguments."""
    names = {c.__name__ for c in type(exc).__mro__}
    return "UsageError" in names and "NoArgsIsHelpError" not in names


def warn(message: str) -> None:
    """A warning: one unwrapped line on stderr, the work goes on."""
    from kwscli.distributed import is_main
    from kwscli.report import err_console

    if not is_main():
        return  # under torchrun rank 0 warns for all
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1, every_rank: bool = False):
    from kwscli.distributed import world
    from kwscli.report import error

    rank = world().rank
    if rank:  # under torchrun rank 0 reports what every rank meets; others only their own
        if not every_rank:
            raise typer.Exit(code)
        message = f"rank {rank}: {message}"
    error(message)
    raise typer.Exit(code)


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    help="Train, compress, evaluate and run small keyword spotters.",
)
data_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Get or make datasets.")
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from kwscli.version import __version__

        typer.echo(f"kws {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Results, warnings and errors only: no progress or notes."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _state["debug"] = debug
    if quiet:
        from kwscli.report import set_quiet

        set_quiet(True)


# ---------------------------------------------------------------- options several commands take

ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML/JSON settings (flags win over it).")
]
DataDir = Annotated[
    str | None, typer.Option("--data", metavar="DIR", help="Dataset root (<word>/*.wav).")
]
Force = Annotated[bool, typer.Option("--force", metavar="", help="Replace an existing output.")]
JsonOut = Annotated[bool, typer.Option("--json", metavar="", help="Print JSON instead of a table.")]


def main() -> None:
    app(prog_name="kws")
