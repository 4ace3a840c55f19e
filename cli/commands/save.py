"""`tally save`: record the workspace as an experiment, running nothing."""

from __future__ import annotations

from ..flags import JSON, MESSAGE, NAME
from ..spec import Command


def body(a) -> None:
    from cas.experiments import runs as experiments
    from cas.workspace.project import open_project

    from .run import render

    render(experiments.save(open_project(), name=a.name, message=a.message), a.json, "Saved")


COMMAND = Command(
    "save", "Record the workspace as an experiment without running anything.",
    body, opts=(NAME, MESSAGE, JSON),
    exits=((4, "the experiment name is taken under this baseline"),))
