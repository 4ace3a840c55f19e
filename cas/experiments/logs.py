"""What an experiment's commands printed: `tally logs NAME`.

A run captures its stages' stdout and stderr into one blob its record names (`logs`),
failed and interrupted runs included. A queued run writes its log to a file under
.tally/queue/logs/ while it runs (cas/queue/status.py follows it), kept until the
entry is removed; that is the only log of a run that has not been recorded yet.
"""

from __future__ import annotations

from typing import Any, Iterator

from cas.core.errors import NotFound
from cas.experiments import lookup


def read(project: Any, spec: str, *, follow: bool = False) -> Iterator[bytes]:
    """The log of the experiment `spec` names, else of the queue entry it names.

    `spec` is looked up as an experiment first (`NAME` or `BASELINE/NAME`, as
    lookup.find); when there is none, as a queue entry (a name or an id prefix), whose
    log is returned in chunks and, with `follow`, read until the entry has finished.
    The lookup happens now; only the reading is lazy.

    Raises:
        NotFound: neither an experiment nor a queue entry; or an experiment recorded
            without a log (saved with `tally save`, not run).
        UsageError: a malformed spec, or a name under several baselines or matching
            several queue entries.
        ObjectMissing, CorruptObject: the log blob is gone or damaged (when read).
    """
    try:
        _, name, oid = lookup.find(project, spec)
    except NotFound as missing:
        from cas.queue import entries
        from cas.queue import status as queue_status

        try:
            item = entries.find(project, spec)
        except NotFound:
            raise NotFound(f"no experiment or queue entry named {spec!r}",
                           hint=missing.hint or "see `tally show -A` and `tally queue status`") from None
        return queue_status.follow_log(project, item, follow=follow)
    from cas.objects import record

    rec = record.load(project.store, oid)
    if rec.logs is None:
        raise NotFound(f"experiment {name!r} has no captured output (it was saved, not run)")
    return iter((project.store.get(rec.logs),))
