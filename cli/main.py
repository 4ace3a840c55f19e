"""The Typer app, built from the declarations in cli/commands/ (cli/spec.py).

Every command is registered here from its `Command`: one keyword parameter per `Arg`
and `Opt`, with its names, metavar and help, and the exit codes as the help's
epilog. The values Typer parses go through `spec.finish`, exactly as the fast
parser's do, and then to the command's body. So `tally X --help` and the Typer run
of X say and do what the declaration says; tests/cli/test_cli_agreement.py checks
that the fast parser (cli/parse.py) reads every command line the same way.

Two choices keep `tally --help` and the commands run through Typer lean, using only
Typer's public API:
- every parameter is a string, a list of strings or a bool, and values are converted
  by the declaration's own types afterwards (one conversion, one set of messages);
- each command declares its own eager `-h/--help` flag. Typer's implicit help
  option has no default, and an absent option without a default is coerced through
  pydantic (tens of ms of imports); a flag defaulting to False is not.

The executable's funnel (errors to exit codes, and the fast path) is cli/entry.py.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable, List, Optional

import typer

from . import commands
from .entry import VERSION
from .spec import ANY, FLAG, HELP, MANY, OPTIONAL, SOME, Arg, Command, Group, epilog, finish, options

ROOT_HELP = ("Keep the books on data-science experiments: data, runs and results in a "
             "content-addressed store linked to Git.\n\n"
             "`tally COMMAND --help` documents each command, its options and its exit codes.")

# What a body is called with: the command, and the namespace spec.finish built.
Call = Callable[[Command, Any], Any]


def _run_body(command: Command, args: Any) -> Any:
    return command.body(args)


def _show_help(ctx: typer.Context, _param: Any, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        typer.echo(ctx.get_help())
        raise typer.Exit()


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"tally {VERSION}\n")
        raise typer.Exit()


def _help_option() -> Any:
    return typer.Option(False, *HELP.names, help=HELP.help, is_eager=True, expose_value=False,
                        callback=_show_help)


def _parameter(spec: Any) -> tuple[Any, Any]:
    """(annotation, Typer default) of one Arg or Opt."""
    if isinstance(spec, Arg):
        required = spec.nargs not in (OPTIONAL, ANY)
        many = spec.nargs in (SOME, ANY)
        annotation = List[str] if many and required else Optional[List[str]] if many \
            else str if required else Optional[str]
        return annotation, typer.Argument(... if required else None, metavar=spec.metavar,
                                          help=spec.help, show_default=False)
    if spec.kind == FLAG:
        if spec.off:  # --on/--off: None when neither is given
            decls = [*spec.names[:-1], f"{spec.names[-1]}/{'/'.join(spec.off)}"]
            return Optional[bool], typer.Option(None, *decls, help=spec.help, show_default=False)
        return bool, typer.Option(False, *spec.names, help=spec.help, show_default=False)
    metavar = spec.metavar or "TEXT"
    if spec.kind == MANY:
        return Optional[List[str]], typer.Option(None, *spec.names, metavar=metavar, help=spec.help,
                                                 show_default=False)
    help_text = spec.help
    if spec.default not in (None, "") and "default" not in help_text:
        help_text += f" [default: {spec.default}]"
    return Optional[str], typer.Option(None, *spec.names, metavar=metavar, help=help_text,
                                       show_default=False)


def _callback(command: Command, call: Call, *, listing: bool = False) -> Callable[..., Any]:
    """A function Typer can register for `command`: its signature is the declaration
    (with `listing`, only --help: the command is listed, never run)."""
    specs = [] if listing else list(command.args) + list(options(command))

    def callback(ctx: typer.Context, **values: Any) -> Any:
        assert not listing, "a listing app runs no command"
        rest = (ctx.obj or {}).get("rest") if command.rest is not None else None
        try:
            return call(command, finish(command, values, rest))
        except KeyboardInterrupt:  # Typer would end silently with 130: the funnel says so
            raise typer.Abort() from None

    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
    annotations: dict[str, Any] = {"ctx": typer.Context, "return": Any}
    for spec in specs:
        annotation, default = _parameter(spec)
        params.append(inspect.Parameter(spec.dest, inspect.Parameter.KEYWORD_ONLY,
                                        default=default, annotation=annotation))
        annotations[spec.dest] = annotation
    params.append(inspect.Parameter("help_", inspect.Parameter.KEYWORD_ONLY, default=_help_option(),
                                    annotation=bool))
    annotations["help_"] = bool
    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    callback.__annotations__ = annotations
    callback.__name__ = command.name.split()[-1]
    callback.__doc__ = command.help
    return callback


def _register(target: typer.Typer, command: Command, call: Call, listing: bool) -> None:
    target.command(command.name.split()[-1], help=command.help, epilog=epilog(command),
                   add_help_option=False)(_callback(command, call, listing=listing))


def build(call: Call = _run_body, *, only: str | None = None, listing: bool = False) -> typer.Typer:
    """The `tally` Typer app, every command registered from its declaration.

    `call(command, args)` runs a command once parsed (the body by default; the
    agreement test records the arguments instead). Typer turns every parameter of
    every registered command into Click's at each start, so two narrower apps serve
    most calls: with `only` (a command or group name), that one alone is registered,
    as `tally NAME ...` needs (~20 ms less); with `listing`, every command by its
    name and help but without its parameters, as `tally --help` and `tally NOSUCH`
    need (~15 ms less).
    """
    app = typer.Typer(name="tally", help=ROOT_HELP, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, add_help_option=False,
                      # Plain help: rich-formatted help costs ~110 ms of imports on every `--help`.
                      rich_markup_mode=None)

    @app.callback()
    def main(
        version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                     help="Print the version and exit."),
        debug: bool = typer.Option(False, "--debug", help="Print a traceback with an unexpected error."),
        help_: bool = _help_option(),
    ) -> None:
        """Global options (cli/entry.py reads --debug before anything runs)."""

    decl = commands.load(only) if only is not None else None
    for decl in [decl] if decl is not None else commands.every():
        if isinstance(decl, Group):
            group = typer.Typer(name=decl.name, help=decl.help, no_args_is_help=True,
                                add_help_option=False, rich_markup_mode=None)
            group.callback()(_group_callback(decl))
            for command in decl.commands:
                _register(group, command, call, listing)
            app.add_typer(group, name=decl.name)
        else:
            _register(app, decl, call, listing)
    return app


def _group_callback(group: Group) -> Callable[..., None]:
    def callback(help_: bool = _help_option()) -> None:
        pass
    callback.__doc__ = group.help
    return callback


def invoke(app: typer.Typer, args: list[str]) -> Any:
    """Run `app` on `args` as `tally` would, returning the body's result.

    What follows the first `--` of a command declared with `rest` (`tally run ... --
    CMD`) is handed over apart: Click drops the `--` and could not tell the command
    from the stages before it.
    """
    obj: dict[str, Any] = {}
    decl = commands.load(command_name(args) or "")
    if isinstance(decl, Command) and decl.rest is not None and "--" in args:
        cut = args.index("--")
        args, obj["rest"] = args[:cut], args[cut + 1:]
    return app(args=args, prog_name="tally", standalone_mode=False, obj=obj)


def command_name(args: list[str]) -> str | None:
    """The command (or group) `args` call, if they name one before any `--`."""
    for a in args:
        if a == "--":
            return None
        if not a.startswith("-"):  # the root takes flags only
            return a if a in commands.NAMES else None
    return None


def command_path(args: list[str]) -> str:
    """`tally NAME` (`tally GROUP NAME`) of the command `args` call, for messages."""
    name = command_name(args)
    decl = commands.load(name) if name else None
    if decl is None:
        return "tally"
    if isinstance(decl, Group):  # a group, like the root, takes flags only before its command
        rest = [a for a in args[args.index(name) + 1:] if not a.startswith("-")]
        if rest and any(c.name == f"{name} {rest[0]}" for c in decl.commands):
            return f"tally {name} {rest[0]}"
    return f"tally {name}"


# The funnel lives in cli/entry.py (Typer-free); these names stay importable from here.
from .entry import entry, run  # noqa: E402,F401
