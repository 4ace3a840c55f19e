"""The remote's layout: which keys exist, the format marker, and checking listed keys.

    tally-remote                           "tally-remote 1\\n": the remote's format
    packs/<64 hex>.pack                    packs (cas/remote/packfile.py)
    index/<64 hex>.idx                     indexes naming packs and large objects
    objects/<2 hex>/<62 hex>[.zst]         large objects, alone
    refs/exps/<baseline>/<name>/<64 hex>   experiment refs (cas/remote/refstore.py)
    queue/<64 hex>                         queued entries (their bytes; the name is their id)
    locks/<kind>-<16 hex>                  locks (cas/remote/locking.py)

Every key a listing returns is parsed here before anything trusts it; one that is
not of its directory's shape raises FormatError (a hostile remote can name files,
but never make a reader use a name it did not expect).
"""

from __future__ import annotations

from cas.core import hashing
from cas.core.errors import FormatError, NotFound, RemoteError
from cas.remote.backend import Backend

MARKER = "tally-remote"
FORMAT = 1
MARKER_TEXT = f"tally-remote {FORMAT}\n"
MAX_MARKER_SIZE = 64  # bytes

PACKS, INDEX, OBJECTS, REFS, QUEUE, LOCKS = "packs/", "index/", "objects/", "refs/exps/", "queue/", "locks/"


def check_format(backend: Backend, *, create: bool) -> bool:
    """Make sure `backend` is a tally remote this tally understands.

    With `create` (writers), a remote without the marker gets one. Returns False for
    a reader of a remote with no marker (nothing was ever pushed: it has nothing).
    Raises:
        RemoteError: a marker of a newer format, or one that is not ours.
    """
    try:
        text = backend.read(MARKER, max_size=MAX_MARKER_SIZE)
    except NotFound:
        if not create:
            return False
        backend.create(MARKER, MARKER_TEXT.encode("ascii"))
        text = backend.read(MARKER, max_size=MAX_MARKER_SIZE)
    except FormatError:
        text = b""
    words = text.decode("ascii", "replace").split()
    if len(words) != 2 or words[0] != MARKER or not words[1].isdigit():
        raise RemoteError(f"{backend.url} is not a tally remote (its {MARKER} file is not ours)",
                          path=backend.where(MARKER))
    if int(words[1]) > FORMAT:
        raise RemoteError(f"{backend.url} has remote format {words[1]}, newer than this tally "
                          f"understands ({FORMAT})", path=backend.url,
                          hint="upgrade tally; an older tally must not write to a newer remote")
    return True


def _bad(key: str, why: str) -> FormatError:
    return FormatError(f"unexpected key {key!r} on the remote: {why}", path=key,
                       hint="something other than tally wrote it; remove it from the remote")


def parse_index_key(key: str) -> str:
    """The index id named by `index/<id>.idx`."""
    name = key[len(INDEX):]
    if not key.startswith(INDEX) or not name.endswith(".idx") or not hashing.is_oid(name[:-4]):
        raise _bad(key, "not index/<64 hex>.idx")
    return name[:-4]


def parse_pack_key(key: str) -> str:
    name = key[len(PACKS):]
    if not key.startswith(PACKS) or not name.endswith(".pack") or not hashing.is_oid(name[:-5]):
        raise _bad(key, "not packs/<64 hex>.pack")
    return name[:-5]


def parse_object_key(key: str) -> tuple[str, bool]:
    """(oid, is the zstd form) of `objects/<aa>/<62 hex>[.zst]`."""
    rest = key[len(OBJECTS):]
    zst = rest.endswith(".zst")
    if zst:
        rest = rest[:-4]
    shard, _, tail = rest.partition("/")
    if not key.startswith(OBJECTS) or len(shard) != 2 or not hashing.is_oid(shard + tail):
        raise _bad(key, "not objects/<2 hex>/<62 hex>[.zst]")
    return shard + tail, zst


def parse_queue_key(key: str) -> str:
    name = key[len(QUEUE):]
    if not key.startswith(QUEUE) or not hashing.is_oid(name):
        raise _bad(key, "not queue/<64 hex>")
    return name


__all__ = ["check_format", "parse_index_key", "parse_pack_key", "parse_object_key",
           "parse_queue_key", "MARKER", "FORMAT", "PACKS", "INDEX", "OBJECTS", "REFS", "QUEUE",
           "LOCKS"]
