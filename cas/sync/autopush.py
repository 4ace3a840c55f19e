"""Optional auto-push: each new experiment goes to the default remote after its run.

Set by `remote.auto_push = true` in `.tally/config` (or config.local), as DVC users
set DVC_EXP_AUTO_PUSH. Called after the experiment's ref is written, by the queue's
executor (cas/workers/executor.py) and by `tally run`'s command. A failed push never
fails the run: the experiment is recorded locally either way, the failure is
reported through `notify`, and `tally push --exp NAME` sends it later.

`enabled` reads only the config already loaded, so a run with auto-push off imports
nothing of the remote layer.
"""

from __future__ import annotations

from typing import Callable


def enabled(project) -> bool:
    if project.config.get("remote.auto_push") == "true":
        return True
    from cas.remote import settings  # config.local may turn it on for one user
    local = settings._read(project.store_dir / settings.LOCAL_FILE)  # noqa: SLF001
    return str((local.get("remote") or {}).get("auto_push", "")).lower() == "true"


def after_run(project, baseline: str, name: str, *,
              notify: Callable[[str], None] | None = None):
    """Push experiment `baseline/name` if auto-push is on; return the report or None.

    Never raises a TallyError: a failure is reported through `notify` and returned as
    None (the run stands; push it later).
    """
    if not _cheap_enabled(project):
        return None
    from cas.core.errors import TallyError
    from cas.sync import exps

    say = notify or (lambda line: None)
    try:
        rep = exps.push(project, names=[f"{baseline}/{name}"])
    except TallyError as exc:
        say(f"auto-push of {name} failed: {exc.message} (run `tally push --exp {name}` later)")
        return None
    for m in rep.results:
        if m.status in ("pushed", "up-to-date"):
            say(f"auto-pushed {m.name} to {rep.remote}")
        else:
            say(f"auto-push of {m.name} to {rep.remote}: {m.status}: {m.error}")
    return rep


def _cheap_enabled(project) -> bool:
    # The committed config first (already parsed); config.local only if it exists.
    if project.config.get("remote.auto_push") == "true":
        return True
    if not (project.store_dir / "config.local").exists():
        return False
    return enabled(project)


__all__ = ["enabled", "after_run"]
