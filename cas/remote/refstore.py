"""Remote refs and queued entries: what a remote says about experiments, by key name.

    refs/exps/<baseline>/<name>/<record id>     content: "<record id>\\n"
    queue/<entry id>                            content: the queue entry's bytes

A remote ref carries its record id in its key, so one LIST answers "which
experiments does the remote have, and which record is each" (`show --remote` of
1,000 experiments: one request, not 1,000), and a ref is never rewritten: pushing
a name creates a key, it never replaces one. Hence the clash rule, which holds on
every backend, atomic or not:

- pushing a name the remote has with the same record is a no-op;
- with a different record it is refused (Conflict), before anything is written;
- two machines pushing one name at the same instant can both succeed; the remote
  then lists two records under one name, and every reader reports the clash
  (`clashes`) instead of picking one. Nothing is lost, nothing is silent.

Every listed key is checked (cas/store/refs.py's rules for names and baselines,
64 hex for ids) and one that is not a ref raises FormatError: a name from a remote
is never used before it is proven to be a plain file name (no '/', no '..').
"""

from __future__ import annotations

from typing import NamedTuple

from cas.core import hashing
from cas.core.errors import Conflict, FormatError, NotFound
from cas.remote import layout
from cas.remote.backend import Backend
from cas.store import refs as local_refs

MAX_ENTRY_SIZE = 16 * 1024 * 1024  # bytes: a queue entry is a few hundred


class RemoteRef(NamedTuple):
    baseline: str
    name: str
    oid: str
    mtime: float  # when it was pushed, by the remote's clock


def ref_key(baseline: str, name: str, oid: str) -> str:
    return f"{layout.REFS}{baseline}/{name}/{oid}"


def parse_ref_key(key: str, mtime: float = 0.0) -> RemoteRef:
    """Check and split a listed ref key. Raises FormatError."""
    parts = key.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}/" != layout.REFS:
        raise FormatError(f"unexpected key {key!r} under refs/exps/ on the remote",
                          hint="something other than tally wrote it; remove it from the remote")
    baseline, name, oid = parts[2], parts[3], parts[4]
    if len(baseline) not in (40, 64) or baseline.strip("0123456789abcdef"):
        raise FormatError(f"remote ref {key!r}: {baseline!r} is not a commit id")
    why = local_refs.name_problem(name)
    if why:
        raise FormatError(f"remote ref {key!r}: {name!r} is not a valid experiment name ({why})")
    if not hashing.is_oid(oid):
        raise FormatError(f"remote ref {key!r}: {oid!r} is not an object id")
    return RemoteRef(baseline, name, oid, mtime)


def list_refs(backend: Backend, baseline: str | None = None) -> list[RemoteRef]:
    """Every ref on the remote (of `baseline`), sorted by baseline, name, id."""
    prefix = layout.REFS + (f"{local_refs.check_baseline(baseline)}/" if baseline else "")
    return sorted(parse_ref_key(e.key, e.mtime) for e in backend.list(prefix))


def clashes(refs: list[RemoteRef]) -> dict[tuple[str, str], list[str]]:
    """(baseline, name) -> the record ids of names the remote holds more than once."""
    by_name: dict[tuple[str, str], list[str]] = {}
    for r in refs:
        by_name.setdefault((r.baseline, r.name), []).append(r.oid)
    return {k: v for k, v in by_name.items() if len(v) > 1}


def clash_error(baseline: str, name: str, oids: list[str]) -> Conflict:
    return Conflict(f"experiment {name!r} ({baseline[:7]}) has {len(oids)} different records "
                    f"on the remote ({', '.join(o[:12] for o in oids)}): two machines pushed the "
                    "same name", hint="pull it by record with BASELINE/NAME after renaming one: "
                                      "`tally exp rename` locally, push it again, then remove the "
                                      "other name from the remote")


def push_ref(backend: Backend, baseline: str, name: str, oid: str) -> bool:
    """Create the remote ref `baseline/name` -> `oid`. Returns False when the remote
    already had exactly this ref (nothing written).

    Raises:
        Conflict: the remote has this name with another record (nothing written), or
            another machine created one at the same time (both are kept; see clashes).
    """
    local_refs.check_baseline(baseline)
    local_refs.check_name(name)
    held = [r.oid for r in list_refs_of(backend, baseline, name)]
    if oid in held and len(held) == 1:
        return False
    others = [o for o in held if o != oid]
    if others:
        raise Conflict(f"experiment {name!r} ({baseline[:7]}) exists on the remote with another "
                       f"record ({others[0][:12]}; yours is {oid[:12]})",
                       hint="rename yours (`tally exp rename OLD NEW`) and push it again")
    backend.create(ref_key(baseline, name, oid), (oid + "\n").encode("ascii"))
    now = [r.oid for r in list_refs_of(backend, baseline, name)]
    if len(set(now)) > 1:
        raise clash_error(baseline, name, sorted(set(now)))
    return True


def list_refs_of(backend: Backend, baseline: str, name: str) -> list[RemoteRef]:
    return [parse_ref_key(e.key, e.mtime)
            for e in backend.list(f"{layout.REFS}{baseline}/{name}/")]


def delete_ref(backend: Backend, ref: RemoteRef) -> None:
    backend.delete(ref_key(ref.baseline, ref.name, ref.oid))


def find(refs: list[RemoteRef], spec: str, *, head: str | None = None) -> RemoteRef:
    """The ref `spec` (NAME or BASELINE-PREFIX/NAME) names among `refs`: under `head`
    first, then anywhere if unique.

    Raises:
        NotFound: none. UsageError: several baselines. Conflict: a clash on the remote.
    """
    from cas.core.errors import UsageError

    prefix, sep, name = spec.rpartition("/")
    local_refs.check_name(name)
    found = [r for r in refs if r.name == name and (not sep or r.baseline.startswith(prefix))]
    if not sep and head is not None and any(r.baseline == head for r in found):
        found = [r for r in found if r.baseline == head]
    baselines = sorted({r.baseline for r in found})
    if not found:
        raise NotFound(f"the remote has no experiment named {spec!r}",
                       hint="`tally show --remote NAME` lists them")
    if len(baselines) > 1:
        raise UsageError(f"experiment {name!r} is on the remote under several baselines "
                         f"({', '.join(b[:7] for b in baselines)})",
                         hint=f"write it as BASELINE/NAME, e.g. {baselines[0][:7]}/{name}")
    if len(found) > 1:
        raise clash_error(found[0].baseline, name, [r.oid for r in found])
    return found[0]


# ---------------------------------------------------------------- queued entries

def list_queue(backend: Backend) -> list[str]:
    """Ids of the queue entries on the remote."""
    return sorted(layout.parse_queue_key(e.key) for e in backend.list(layout.QUEUE))


def read_queue_entry(backend: Backend, entry_id: str) -> bytes:
    """The bytes of entry `entry_id`, checked against the id. Raises FormatError, NotFound."""
    data = backend.read(f"{layout.QUEUE}{entry_id}", max_size=MAX_ENTRY_SIZE)
    if hashing.hash_bytes(data) != entry_id:
        raise FormatError(f"queue entry {entry_id[:16]} on the remote does not hash to its name")
    return data


def push_queue_entry(backend: Backend, entry_id: str, data: bytes) -> bool:
    """Put an entry (its name is its id, so create-or-keep). False: already there."""
    return backend.create(f"{layout.QUEUE}{entry_id}", data)


__all__ = ["RemoteRef", "list_refs", "push_ref", "delete_ref", "clashes", "clash_error", "find",
           "parse_ref_key", "ref_key", "list_queue", "read_queue_entry", "push_queue_entry"]

