"""The CLI is declared once: both front ends agree, and a flag means one thing.

Every command's declaration (cli/commands/) builds the Typer app (cli/main.py) and
drives the fast parser (cli/parse.py). For every command, argument vectors generated
from its own table (valid and not: values that look like options, clusters,
attached values, missing values, unknown options, extra arguments, `--`) are read by
both; they must yield the same values, or both refuse with exit 2 and the same
message, or both show the help. README.md's flag table is checked against every
declaration: a short form always stands for the same long one, and an option shared
by several commands has the same destination, kind and type in each.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cas.core.errors import UsageError
from cli import commands, entry, flags, main, spec
from cli.commands import plots, ui
from cli.parse import HelpRequested, parse

COMMANDS = {c.name: c for c in commands.commands()}
README = Path(__file__).resolve().parents[2] / "README.md"

# -- the two front ends, side by side -------------------------------------------------------

Outcome = tuple  # ("ok", values) | ("error", exit code, message) | ("help",)


@pytest.fixture(scope="module")
def recording_app() -> tuple[Any, list]:
    """The Typer app as shipped, except that a body records what it received."""
    calls: list = []
    return main.build(call=lambda command, args: calls.append((command.name, vars(args)))), calls


def via_typer(app_and_calls: tuple[Any, list], command: spec.Command, argv: list[str],
              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Outcome:
    """What the Typer front end makes of `tally COMMAND ARGV`, through cli/entry.py's
    own handling of Typer's outcomes."""
    app, calls = app_and_calls
    calls.clear()
    monkeypatch.setattr(main, "build", lambda call=None, only=None, listing=False: app)
    capsys.readouterr()
    try:
        code = entry._typer(command.name.split() + argv)
    except UsageError as exc:
        return ("error", exc.exit_code, exc.message)
    out = capsys.readouterr().out
    if not calls:
        assert code == 0 and out.startswith(f"Usage: tally {command.name}"), (code, out)
        return ("help",)
    assert code in (0, None) and calls[-1][0] == command.name
    return ("ok", calls[-1][1])


def via_fast_parser(command: spec.Command, argv: list[str]) -> Outcome:
    try:
        return ("ok", vars(parse(command, argv)))
    except UsageError as exc:
        return ("error", exc.exit_code, exc.message)
    except HelpRequested:
        return ("help",)


# -- argument vectors from a declaration ----------------------------------------------------

VALUES = {  # per value type: values it takes and values it refuses, some that look like options
    spec.text: ["v", "", "-x", "--", "a b", "-1", "--json", "x=1"],
    spec.count: ["0", "3", "-1", "x", "1.5"],
    spec.positive: ["1", "4", "0", "-2", "n"],
    spec.integer: ["-3", "7", "seven"],
    spec.seconds: ["0", "2.5", "-1", "soon"],
    spec.sort_key: ["acc", "acc:desc", "metrics.json:acc:max", ":asc", "", "loss:MIN"],
    flags.digits: ["1", "30", "0", "31", "x"],
    plots.output_format: ["html", "png", "svg", "pdf", "", "HTML"],
    ui.port: ["0", "8080", "65535", "65536", "-1", "http"],
}
JUNK = ["--bogus", "-Z", "--", "-", "--jso", "--force=1", "--json=yes", "-h", "--help"]
WORDS = ["a", "b", "x=1", "-", "seed"]


def tokens(command: spec.Command) -> st.SearchStrategy[list[str]]:
    """One use of something the command might be given, as a list of tokens."""
    uses: list[st.SearchStrategy[list[str]]] = [st.sampled_from([[w] for w in WORDS + JUNK])]
    shorts = [n for o in spec.options(command) if o.kind == spec.FLAG for n in o.names if len(n) == 2]
    for opt in spec.options(command):
        names = opt.names + opt.off
        if opt.kind == spec.FLAG:
            uses.append(st.sampled_from([[n] for n in names]))
            continue
        values = st.sampled_from(VALUES[opt.type])
        name = st.sampled_from(names)
        uses.append(st.tuples(name, values).map(list))  # -n V, --name V
        uses.append(st.tuples(name, values).map(  # --name=V, -nV
            lambda nv: [f"{nv[0]}={nv[1]}" if nv[0].startswith("--") else nv[0] + nv[1]]))
        uses.append(name.map(lambda n: [n]))  # the value missing (or the next token taken)
        if shorts:
            short = [n for n in opt.names if len(n) == 2]
            if short:  # a cluster of flags ending with this option and its value: -fqnNAME
                uses.append(st.tuples(st.lists(st.sampled_from(shorts), min_size=1, max_size=3),
                                      st.sampled_from(short), values).map(
                    lambda t: ["-" + "".join(s[1] for s in t[0]) + t[1][1] + t[2]]))
    if shorts:
        uses.append(st.lists(st.sampled_from(shorts), min_size=2, max_size=4).map(
            lambda ss: ["-" + "".join(s[1] for s in ss)]))
    return st.one_of(uses)


def argvs(command: spec.Command) -> st.SearchStrategy[list[str]]:
    return st.lists(tokens(command), max_size=6).map(lambda uses: [t for u in uses for t in u])


# -- the agreement --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(COMMANDS))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@example(data=None)
def test_typer_and_the_fast_parser_read_every_command_line_alike(
        name: str, data: Any, recording_app, monkeypatch, capsys) -> None:
    command = COMMANDS[name]
    argvs_to_try = [[], ["--bogus"], ["a", "b", "c"]] if data is None else \
        [data.draw(argvs(command), label="argv")]
    for argv in argvs_to_try:
        fast = via_fast_parser(command, argv)
        typer = via_typer(recording_app, command, argv, monkeypatch, capsys)
        assert fast == typer, argv


RUN_LINES = [  # `tally run` lines users type; both front ends read each the same way
    [], ["-q", "--", "true"], ["train", "-S", "lr=0.1", "eval", "-Sb=2", "--set-param=c=3", "-S=d=4"],
    ["-fq", "-nNAME", "-m", "hello world"], ["-qnX"], ["--wait", "2.5", "-j", "3"],
    ["--wait=-1", "-j", "2"], ["-m", "-1"], ["-m", "-x y"], ["-", "", "a b"],
    ["-o", "a", "-O", "b", "-d", "c", "-M", "m.json", "--", "sh", "-c", "x"], ["-nfoo=bar"],
    ["--queue", "--run-all", "--dry-run", "--resume", "r", "--no-run-cache"], ["--resume=", "-n="],
    ["--dry", "a", "-s", "b", "-k", "--downstream"], ["-sk", "d"], ["-ksq", "-Sx=1", "-s"],
    ["--dry", "--", "echo", "--json", "-h"], ["-m", "--", "x"], ["--", "--"],
    ["-j", "0"], ["-j", "1.5"], ["--wait", "abc"], ["--dry=1"], ["-x"], ["-fx"], ["--forc"],
    ["-n"], ["-m", "--json"],
]


@pytest.mark.parametrize("argv", RUN_LINES)
def test_run_lines(argv: list[str], recording_app, monkeypatch, capsys) -> None:
    command = COMMANDS["run"]
    fast = via_fast_parser(command, argv)
    assert fast == via_typer(recording_app, command, argv, monkeypatch, capsys)


@pytest.mark.parametrize("argv, values", [
    (["-m", "-x"], {"message": "-x"}),  # a value is the next token, whatever it looks like
    (["-nfoo=bar"], {"name": "foo=bar"}),
    (["-n=x"], {"name": "=x"}),  # as Click reads it: `-n` takes the rest of the token
    (["-fqnNAME", "st"], {"force": True, "quiet": True, "name": "NAME", "targets": ["st"]}),
    (["a", "--", "sh", "-c", "echo --"], {"targets": ["a"], "cmd": ["sh", "-c", "echo --"]}),
    (["--wait", "-1", "-j", "2"], {"wait": -1.0, "jobs": 2}),
    (["-S", "a=1", "-S", "b=2"], {"set_param": ["a=1", "b=2"]}),
    ([], {"targets": [], "cmd": None, "message": "", "wait": 0.0, "jobs": 1, "name": None}),
])
def test_what_run_lines_mean(argv: list[str], values: dict[str, Any]) -> None:
    got = vars(parse(COMMANDS["run"], argv))
    assert {k: got[k] for k in values} == values


@pytest.mark.parametrize("name, argv, message", [
    ("run", ["-n"], "Option '-n' requires an argument."),
    ("run", ["--json=1"], "Option '--json' does not take a value."),
    ("run", ["--forc"], "No such option: --forc (Possible options: --force)"),
    ("run", ["-fx"], "No such option: -x"),
    ("run", ["-j", "0"], "Invalid value for '-j' / '--jobs': '0' is not at least 1"),
    ("show", ["-n", "3"], "No such option: -n"),
    ("show", ["--precision", "31"], "Invalid value for '--precision': '31' is not between 1 and 30"),
    ("restore", [], "Missing argument 'NAME'."),
    ("restore", ["a", "b"], "Got unexpected extra argument(s) (b)"),
    ("add", [], "Missing argument 'PATH'."),
    ("gc", ["-n"], "No such option: -n"),
    ("gc", ["--keep-best", "x"], "Invalid value for '--keep-best': 'x' is not a whole number"),
    ("queue logs", ["-f", "x"], "No such option: -f"),
    ("status", ["--json", "\x1b[2J"], None),  # a path may be anything: no error
])
def test_refusals_name_the_mistake(name: str, argv: list[str], message: str | None) -> None:
    command = COMMANDS[name]
    if message is None:
        parse(command, argv)
        return
    with pytest.raises(UsageError) as caught:
        parse(command, argv)
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(f"tally {name}: {message}")
    assert caught.value.hint == f"see `tally {name} --help`"


# -- one flag, one meaning --------------------------------------------------------------------

def flag_table() -> list[dict[str, Any]]:
    """README.md's flag table: per row, the names, the meaning and the commands."""
    text = README.read_text()
    section = text[text.index("## Flags"):]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        names = re.findall(r"`(-[-\w]+)`", cells[0])
        where = {c.strip() for c in cells[2].split(",")}
        rows.append({"names": set(names), "meaning": cells[1],
                     "commands": set(COMMANDS) if where == {"every command"} else where})
    return rows


def declared() -> list[tuple[str, spec.Opt]]:
    return [(c.name, o) for c in COMMANDS.values() for o in spec.options(c) + (spec.HELP,)]


def test_the_flag_table_is_what_the_declarations_say() -> None:
    rows = flag_table()
    assert rows, "README.md has no flag table"
    users: dict[str, set[str]] = {}
    for command, opt in declared():
        for n in opt.names + opt.off:
            users.setdefault(n, set()).add(command)
    for command, opt in declared():
        names = set(opt.names + opt.off)
        listed = [r for r in rows if r["names"] & names]
        shared = any(len(users[n]) > 1 for n in names)
        short = any(len(n) == 2 for n in names)
        if not (shared or short or listed):
            continue  # one command's own long option: its help is its table
        assert len(listed) == 1, f"{command}: {sorted(names)} must be in exactly one row of the table"
        assert names <= listed[0]["names"], \
            f"{command}: {sorted(names)} declared, the table says {sorted(listed[0]['names'])}"
    for row in rows:
        takers = set().union(*(users.get(n, set()) for n in row["names"]))
        assert takers == row["commands"], f"{sorted(row['names'])}: declared by {sorted(takers)}"


def test_a_flag_means_one_thing_in_every_command() -> None:
    """Same name, same destination, kind and type; a short form always goes with the same
    long one."""
    seen: dict[str, tuple[str, spec.Opt]] = {}
    for command, opt in declared():
        for n in opt.names + opt.off:
            if n in seen:
                other_command, other = seen[n]
                assert (opt.dest, opt.kind, opt.type) == (other.dest, other.kind, other.type), \
                    f"{n}: {command} and {other_command} disagree"
            else:
                seen[n] = (command, opt)
    long_of_short: dict[str, set[str]] = {}
    for _, opt in declared():
        for s in (n for n in opt.names if len(n) == 2):
            long_of_short.setdefault(s, set()).add(next(n for n in opt.names if n.startswith("--")))
    assert {s: ls for s, ls in long_of_short.items() if len(ls) > 1} == {}


def test_sort_keys_are_written_one_way_everywhere() -> None:
    takers = {c for c, o in declared() if "--sort-by" in o.names}
    assert takers == {"show", "promote", "remove", "gc", "push", "pull"}
    assert {o.type for _, o in declared() if "--sort-by" in o.names} == {spec.sort_key}


# -- help and exit codes, from the declaration ------------------------------------------------

@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_documents_options_and_exit_codes(name: str, capsys) -> None:
    from cas.core import errors

    command = COMMANDS[name]
    assert entry.run(name.split() + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: tally {name} ")
    for opt in spec.options(command):
        for n in opt.names + opt.off:
            assert n in out, f"{n} missing from `tally {name} --help`"
    assert "Exit codes:" in out
    known = {c.exit_code for c in vars(errors).values() if isinstance(c, type) and
             issubclass(c, errors.TallyError)} | {0}
    for code, meaning in spec.exit_codes(command):
        assert code in known, f"{name}: exit {code} is not in cas.core.errors' mapping"
        assert re.search(rf"^\s+{code}\s+", out, re.M), f"{name}: exit {code} undocumented"


def test_every_command_is_declared_with_a_body_and_a_summary() -> None:
    for command in COMMANDS.values():
        assert callable(command.body) and command.help.split("\n")[0].endswith(".")
        assert len({o.dest for o in spec.options(command)} | {a.dest for a in command.args}) == \
            len(spec.options(command)) + len(command.args), f"{command.name}: two params, one dest"
