"""The fast parser: a command line read against a command's declaration, without Typer.

cli/entry.py runs the commands declared `fast` (cli/spec.py) through `parse` and never
imports Typer (~60 ms, more with pydantic), nor argparse (~3-8 ms of imports and
set-up). It reads a command line exactly as the Typer app built from the same
declaration does (Click's rules, which tests/cli/test_cli_agreement.py checks):

- options and arguments may be intermixed; `--` ends the options (or, for a command
  with `rest`, the first `--` hands everything after it to `rest`);
- a token starting with `-` (other than `-` itself) is an option: `--name V`,
  `--name=V`, `-n V`, `-nV`; short flags cluster (`-fq`, `-qnNAME`);
- an option taking a value takes the next token whatever it looks like (`-m -x`
  is the message "-x");
- no abbreviations of long names.

Errors are UsageError (exit 2) with Click's wording, so both front ends say the same.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

from .spec import ANY, FLAG, HELP, MANY, REQUIRED, SOME, Command, Opt, fail, finish, options


class HelpRequested(Exception):
    """`-h`/`--help` was given (after every option parsed): show the command's help."""


def parse(command: Command, argv: Sequence[str]) -> SimpleNamespace:
    """The namespace `command.body` receives for the command line `argv`.

    Raises:
        UsageError: an unknown option, a missing or extra value or argument, or a value
            its type refuses; the message is Click's for the same mistake.
        HelpRequested: -h/--help among the options (and no error before it).
    """
    args = list(argv)
    rest = None
    if command.rest is not None and "--" in args:
        cut = args.index("--")
        args, rest = args[:cut], args[cut + 1:]
    table = options(command) + (HELP,)
    by_name: dict[str, tuple[Opt, bool]] = {}
    for opt in table:
        for name in opt.names:
            by_name[name] = (opt, True)
        for name in opt.off:
            by_name[name] = (opt, False)
    raw: dict[str, Any] = {}
    positional: list[str] = []

    def take(opt: Opt, name: str, value: str | None, i: int) -> int:
        """Record one use of `opt`; its value is `value` or the token at `i`."""
        if value is None:
            if i >= len(args):
                raise fail(command, f"Option {name!r} requires an argument.")
            value, i = args[i], i + 1
        if opt.kind == MANY:
            raw.setdefault(opt.dest, []).append(value)
        else:
            raw[opt.dest] = value
        return i

    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == "--":
            positional.extend(args[i:])
            break
        if tok[:1] != "-" or len(tok) == 1:
            positional.append(tok)
            continue
        if tok[:2] == "--":  # a long name: --name V, --name=V
            name, eq, attached = tok.partition("=")
            hit = by_name.get(name)
            if hit is None:
                raise fail(command, _no_such_option(name, by_name))
            opt, on = hit
            if opt.kind != FLAG:
                i = take(opt, name, attached if eq else None, i)
            elif eq:
                raise fail(command, f"Option {name!r} does not take a value.")
            else:
                raw[opt.dest] = on
            continue
        for j in range(1, len(tok)):  # a cluster of short options: -fq, -nNAME, -qnNAME
            short = "-" + tok[j]
            hit = by_name.get(short)
            if hit is None:
                raise fail(command, f"No such option: {_escape(short)}")
            opt, on = hit
            if opt.kind == FLAG:
                raw[opt.dest] = on
                continue
            i = take(opt, short, tok[j + 1:] or None, i)
            break
    if raw.get(HELP.dest):
        raise HelpRequested()
    extra = _assign(command, positional, raw)
    if extra:
        raise fail(command, f"Got unexpected extra argument(s) ({' '.join(_escape(e) for e in extra)})")
    return finish(command, raw, rest)


def _assign(command: Command, positional: list[str], raw: dict[str, Any]) -> list[str]:
    """Give the positional tokens to the arguments, in order; return the extra ones.

    Raises:
        UsageError: a required argument without a token (Click: "Missing argument").
    """
    for arg in command.args:
        if not positional:
            if arg.nargs in (REQUIRED, SOME):
                raise fail(command, f"Missing argument '{arg.metavar}'.")
        elif arg.nargs in (SOME, ANY):
            raw[arg.dest], positional = positional, []
        else:
            raw[arg.dest] = positional.pop(0)
    return positional


def _no_such_option(name: str, by_name: dict[str, Any]) -> str:
    """Click's message for an unknown long option, with its close matches."""
    from difflib import get_close_matches  # only on this error path

    longs = [n for n in by_name if len(n) > 2]
    close = get_close_matches(name, longs)
    message = f"No such option: {_escape(name)}"
    return f"{message} (Possible options: {', '.join(sorted(close))})" if close else message


def _escape(value: str) -> str:
    """Control characters shown as \\xNN, as Click shows untrusted values."""
    if value.isprintable():
        return value
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f else c for c in value)
