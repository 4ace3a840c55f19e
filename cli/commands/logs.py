"""`tally logs`: what an experiment's commands printed."""

from __future__ import annotations

import sys

from ..flags import FOLLOW
from ..spec import REQUIRED, Arg, Command


def body(a) -> None:
    from cas.experiments import logs
    from cas.workspace.project import open_project

    w = sys.stdout.buffer
    for chunk in logs.read(open_project(), a.name, follow=a.follow):
        w.write(chunk)
        w.flush()


COMMAND = Command(
    "logs",
    "Print the captured stdout and stderr of an experiment's run, failed ones included.\n\n"
    "NAME is an experiment (NAME or BASELINE/NAME) or, when none has that name, a queue "
    "entry (its name or id prefix): pending, running or finished, every attempt.",
    body,
    args=(Arg("name", "NAME", REQUIRED, "An experiment, or a queue entry."),),
    opts=(FOLLOW._replace(help="For a queue entry: keep printing until the run has finished."),),
    exits=((2, "bad usage, or a NAME under several baselines (write BASELINE/NAME)"),
           (3, "no experiment or queue entry NAME, or it has no captured output"),
           (5, "the log in the store is corrupt")))
