"""`tally restore`: an experiment's files back into the workspace.

Fast path: bringing a result back should cost the link, not the CLI (Typer was
~60-150 ms of the ~0.4 s a 1 GiB hardlinked restore took).
"""

from __future__ import annotations

from ..flags import FORCE, JSON, VERIFY
from ..output import emit_json, err, out
from ..spec import ONE, REQUIRED, Arg, Command, Opt, integer


def body(a) -> None:
    from cas.experiments import restore
    from cas.workspace.project import open_project

    from cas.core.errors import NotFound

    project = open_project()
    try:
        r = restore.restore(project, a.name, force=a.force, step=a.step, verify=a.verify)
    except NotFound:  # unknown here, or its record or data missing (ObjectMissing)
        from cas.remote import settings
        if not settings.remotes(project):
            raise
        from cas.sync import exps  # on demand: from the default remote, verified
        err(f"{a.name}: not complete here; fetching it from the remote")
        r = exps.restore(project, a.name, force=a.force, step=a.step, verify=a.verify)
    if a.json:
        emit_json(r.to_json())
        return
    for path in r.skipped:  # a link Git may hold; tally never writes one that leaves the tree
        err(f"not restored (points outside the work tree): {path}")
    what = f"{r.name}" + (f" at step {r.step}" if r.step is not None else "")
    if not r.written and not r.deleted:
        out(f"{what}: the workspace already matches ({r.unchanged} files)")
        return
    modes = ", ".join(f"{n} {m}" for m, n in sorted(r.modes.items()))
    if r.head is not None and r.head != r.baseline:
        err(f"note: {r.name} ran on {r.baseline[:7]}, HEAD is {r.head[:7]}: "
            "`git diff` now shows the experiment's files against HEAD")
    out(f"restored {what}: {len(r.written)} written" + (f" ({modes})" if modes else "")
        + f", {len(r.deleted)} deleted, {r.unchanged} unchanged")


COMMAND = Command(
    "restore",
    "Bring an experiment's code, params and outputs back into the workspace.\n\n"
    "Nothing runs: files come from the store, by link for data. Only files that differ "
    "are touched. Refuses (exit 4) to overwrite or delete uncommitted work, naming the "
    "files, unless --force.",
    body,
    args=(Arg("name", "NAME", REQUIRED, "The experiment (NAME or BASELINE/NAME)."),),
    opts=(FORCE._replace(help="Overwrite uncommitted changes that are not in the store."),
          Opt(("--step",), "step", ONE, "Restore the checkpoint taken at step K.", metavar="K",
              type=integer),
          VERIFY,
          JSON),
    exits=((2, "bad usage, or a NAME under several baselines (write BASELINE/NAME)"),
           (3, "no such experiment or step, or an object is missing from the store"),
           (4, "would overwrite or delete uncommitted work (see --force)"),
           (5, "an object in the store is corrupt (nothing damaged takes a file's name)"),
           (7, "another tally process holds the workspace or the store")),
    fast=True)
