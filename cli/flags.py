"""Options that more than one command takes: declared once, so a flag means one thing.

A command uses these as they are, or `_replace`s its help (to say what the meaning
comes to in that command) or its default; never its names, dest, kind or type.
README.md's flag table lists these and every short form; tests/cli/test_cli_agreement.py
checks that every command's declaration agrees with that table.
"""

from __future__ import annotations

from .spec import FLAG, ONE, Opt, count, positive, seconds, sort_key, text


def digits(value: str) -> int:
    """Significant digits of floats: 1 to 30."""
    n = count(value)
    if not 1 <= n <= 30:
        raise ValueError(f"{value!r} is not between 1 and 30")
    return n


JSON = Opt(("--json",), "json", FLAG, "Machine-readable output on stdout: one JSON document, stable keys.")
FORCE = Opt(("-f", "--force"), "force", FLAG,
            "Do what the command would otherwise refuse or skip (its help says which).")
DRY_RUN = Opt(("--dry-run",), "dry_run", FLAG, "Change nothing; report what would be done.")
NAME = Opt(("-n", "--name"), "name", ONE, "Experiment name (default: generated, e.g. bold-seal).",
           metavar="NAME")
MESSAGE = Opt(("-m", "--message"), "message", ONE, "A note stored with the experiment.",
              metavar="MSG", default="")
ALL_COMMITS = Opt(("-A", "--all-commits"), "all_commits", FLAG,
                  "Every commit, not only HEAD: experiments of every baseline commit.")
ALL = Opt(("--all",), "all", FLAG, "Everything the command could select, not its default subset.")
FAILED = Opt(("--failed",), "failed", FLAG, "The failed ones (failed or interrupted runs).")
FILTER = Opt(("--filter",), "filter", ONE,
             "Only experiments matching EXPR, e.g. 'metrics.acc > 0.9 and params.train.lr <= 0.01': "
             "== != < <= > >= ~ (glob) !~, and/or/not, parentheses, \"strings\", numbers, "
             "true/false/null; also the fields name, status, created, baseline. A comparison "
             "with a missing value is false (`k == null` tests for one).", metavar="EXPR")
SORT_BY = Opt(("--sort-by",), "sort_by", ONE,
              "Order by a column: KEY:desc puts the highest first, KEY:asc the lowest "
              "(:max and :min are aliases). KEY is metrics.json:acc, metrics.acc or acc, "
              "as long as it names one column.", metavar="KEY[:asc|:desc]", type=sort_key)
KEEP_BEST = Opt(("--keep-best",), "keep_best", ONE, "Keep the best N by --sort-by.", metavar="N",
                type=count)
OLDER_THAN = Opt(("--older-than",), "older_than", ONE,
                 "Experiments created more than DURATION ago (12h, 30d, 2w).", metavar="DURATION",
                 type=text)
PRECISION = Opt(("--precision",), "precision", ONE, "Significant digits of floats (1-30).",
                metavar="N", type=digits)
JOBS = Opt(("-j", "--jobs"), "jobs", ONE, "How many runs at a time.", metavar="N", type=positive,
           default=1)
WAIT = Opt(("--wait",), "wait", ONE, "How long to wait for a lock another tally process holds.",
           metavar="SECONDS", type=seconds, default=0.0)
FOLLOW = Opt(("--follow",), "follow", FLAG, "Keep printing until the run has finished.")
VERIFY = Opt(("--verify",), "verify", FLAG,
             "Copies are always checked against their id; --verify also checks hardlinked, "
             "symlinked and reflinked files, reading each object once (slower; "
             "spec/checkout.md, \"Verification\").")

# Declared by one command each but listed in README.md's table: their short forms.
QUIET = Opt(("-q", "--quiet"), "quiet", FLAG, "Do not echo stage output or progress.")
VERBOSE = Opt(("-v", "--verbose"), "verbose", FLAG, "Say more: list every item acted on.")
YES = Opt(("-y", "--yes"), "yes", FLAG, "Do not ask (required when stdin is not a terminal).")

