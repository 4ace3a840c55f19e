"""What one experiment run is asked to do: the same for `tally run`, a queued entry and a resume.

`tally run` builds a RunRequest from its flags; `tally run --queue` stores one per
point of the `-S` grid as a queue entry (cas/objects/queue_entry.py keeps the fields a
queued run needs) and the executor rebuilds the request from it; `--resume` is the
same request continuing from a checkpoint. How the run is carried out here (echo,
waiting for the workspace, the stage environment) is not part of the request: those
are keyword arguments of cas/experiments/runs.py's run.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.
# NamedTuples, not dataclasses: a dataclass costs ~1 ms of start-up each.

from typing import NamedTuple, Optional


class QuickStage(NamedTuple):
    """`tally run -o OUT -d DEP -M METRICS -- CMD...`: one stage from the command line."""

    cmd: tuple[str, ...]
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    outs_no_cache: tuple[str, ...] = ()


class RunRequest(NamedTuple):
    """One run's inputs. Immutable: a sweep or a resume derives new ones with _replace.

    stages: stage names or foreach/matrix groups to run, with their upstream stages
        (none: the whole pipeline). single: without their upstream (`-s`).
        downstream: with every stage downstream of them. keep_going: after a failed
        stage, still run the stages that do not depend on it (`-k`).
    set_params: `-S [FILE:]KEY=VALUE` overrides, applied to the params files first.
    name: the experiment's name (generated when None). message: a note kept in the record.
    force: run stages even when tally.lock says they are up to date (`-f`).
    no_run_cache: never restore outputs from the run-cache.
    quick_stage: a one-stage run from the command line instead of the pipeline file.
    resume: the name of an experiment whose last checkpoint this run continues.
    parent: the record id it continues (set when `resume` is resolved, or by the queue).
    """

    stages: tuple[str, ...] = ()
    set_params: tuple[str, ...] = ()
    name: Optional[str] = None
    message: str = ""
    force: bool = False
    no_run_cache: bool = False
    quick_stage: Optional[QuickStage] = None
    single: bool = False
    downstream: bool = False
    keep_going: bool = False
    resume: Optional[str] = None
    parent: Optional[str] = None


__all__ = ["QuickStage", "RunRequest"]
