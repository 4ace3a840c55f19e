"""The object graph: what each object names, and a walker that marks what roots reach.

gc (what to keep) and fsck (is everything a root needs present and sound?) walk the
same graph, so they share this module and can never disagree about an edge.

Edges by kind (the kind is read from the envelope header, spec/store.md):

    blob                     none
    tree (T)                 every entry: a directory names a tree, a file or a
                             symlink a blob. All required.
    record (R)               workspace tree, outs, logs blob, checkpoint trees:
                             required; parent record and dep ids: optional (a dep
                             tracked by Git is hashed but never stored; a parent
                             may have been removed).
    any other structured     no decoder registered here (run-cache and queue
    kind (C, Q, future)      entries until their modules register one): every
                             32-byte binary string in the body is an optional edge.
                             A conservative superset: gc keeps more, never less.

"Required" means a missing target is a problem (gc refuses to sweep, fsck reports
it); "optional" means the target is kept when present and ignored when absent.

Structured objects are read with `max_size=MAX_STRUCT_SIZE` and verified against
their id, so a hostile zstd frame cannot make the walker allocate more than that.

deletion_order() puts what no root reaches in the order gc deletes it: everything
after what names it (spec/gc.md, "Deletion order and the crash argument").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import msgpack

from cas.objects import envelope
from cas.objects import tree
from cas.core.errors import CorruptObject, FormatError, ObjectMissing, TallyError

BLOB, TREE, RECORD = "blob", "tree", "record"
# Envelope kind byte -> kind name; anything else (no magic) is a blob.
KIND_BY_BYTE = {envelope.KIND_TREE: TREE, envelope.KIND_RECORD: RECORD,
                envelope.KIND_RUNCACHE: "run-cache entry", envelope.KIND_QUEUE: "queue entry"}
# Deletion layer of each kind: gc deletes layer 0 first (the reverse of write order).
LAYER = {RECORD: 0, "run-cache entry": 0, "queue entry": 0, TREE: 1, BLOB: 2}
DIGEST = 32  # bytes of a raw object id inside msgpack bodies


@dataclass(frozen=True, slots=True)
class Edges:
    """What one object names. `required` pairs each id with its kind when known."""

    required: tuple[tuple[str, str | None], ...] = ()
    optional: tuple[str, ...] = ()


NO_EDGES = Edges()
EdgeDecoder = Callable[[bytes], Edges]
_decoders: dict[str, EdgeDecoder] = {}


def register_edges(kind: str, decoder: EdgeDecoder) -> None:
    """Let the module owning a structured kind (run-cache, queue) state its edges.

    `decoder` gets the object's verified bytes and returns its Edges; it raises
    FormatError on bad input. Until one is registered, the generic scan applies.
    """
    _decoders[kind] = decoder


def kind_of_header(head: bytes) -> str:
    """The kind named by an object's first bytes (BLOB when it is not an envelope)."""
    if len(head) >= envelope.HEADER_SIZE and head[:3] == envelope.MAGIC:
        return KIND_BY_BYTE.get(head[3:4], BLOB)
    return BLOB


def tree_edges(data: bytes) -> Edges:
    t = tree.decode(data)
    return Edges(required=tuple((e.oid, TREE if e.kind == tree.DIR else BLOB) for e in t.entries))


def tree_children(data: bytes) -> Edges:
    """A tree's edges from its rows' kind and id alone, without tree.decode's checks of
    names, modes, order and totals.

    For ordering what is already garbage (gc deletes a tree before what it names):
    the same edges as tree_edges for a sound tree, and for a tree that fails those
    checks still every id it names, which only adds order. Never for marking, where a
    tree that does not decode is a root problem.

    Raises:
        FormatError: not a tree envelope, or rows without a kind and a 32-byte id.
    """
    _, body = envelope.decode(data, kind=envelope.KIND_TREE, versions=(tree.VERSION,))
    try:
        return Edges(required=tuple((row[2].hex(), TREE if row[1] == tree.DIR else BLOB)
                                    for row in body[2] if len(row[2]) == DIGEST))
    except (TypeError, IndexError, KeyError, AttributeError):
        raise FormatError("tree rows are not [name, kind, oid, size, mode]") from None


def record_edges(data: bytes) -> Edges:
    from cas.objects import record  # deferred: records pull in more than a tree walk needs

    rec = record.decode(data)
    req: list[tuple[str, str | None]] = []
    if rec.workspace is not None:
        req.append((rec.workspace, TREE))
    req.extend((oid, TREE if is_dir else BLOB) for oid, is_dir in rec.outs.values())
    if rec.logs is not None:
        req.append((rec.logs, BLOB))
    req.extend((t, TREE) for _, t in rec.checkpoints)
    opt = [*rec.deps.values(), *([rec.parent] if rec.parent else [])]
    return Edges(required=tuple(req), optional=tuple(opt))


def generic_edges(data: bytes) -> Edges:
    """Every 32-byte binary string anywhere in an envelope's body, as optional edges."""
    _, body = envelope.decode(data, kind=data[3:4], versions=tuple(range(1, 256)))
    found: list[str] = []
    stack = [body]
    while stack:
        v = stack.pop()
        if isinstance(v, bytes):
            if len(v) == DIGEST:
                found.append(v.hex())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
    return Edges(optional=tuple(dict.fromkeys(found)))


_BUILTIN: dict[str, EdgeDecoder] = {TREE: tree_edges, RECORD: record_edges}


def edges_of(kind: str, data: bytes) -> Edges:
    """The edges of an object of `kind` whose verified content is `data`.

    Raises:
        FormatError: the object does not decode as its kind.
    """
    if kind == BLOB:
        return NO_EDGES
    decoder = _BUILTIN.get(kind) or _decoders.get(kind) or generic_edges
    try:
        return decoder(data)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:  # a decoder's slip
        raise FormatError(f"{kind} does not decode: {exc}") from None


Report = Callable[[str, str, str], None]  # (problem kind, where, detail)


class Walker:
    """Marks everything reachable from the roots given to walk(), one bit per root kind.

    `marks[oid]` is the OR of the bits of every root kind that reaches the object;
    an object is expanded at most once per bit, and a structured object is read and
    decoded at most once in all (its edges are cached). Problems go to `report`.

    Args:
        store: a FileStore (or any ObjectStore with read_head).
        present: ids known to be present (gc's inventory); others are asked of the
            store, so objects published after the inventory are still seen.
        bad: ids already known corrupt (fsck's first pass): reported as broken, not read.
        head: reads an object's first `envelope.HEADER_SIZE` content bytes, unverified
            (default `store.read_head`); gc passes one that knows each object's form
            from its inventory and skips the store's path probing. Same errors as
            read_head: ObjectMissing, CorruptObject.
    """

    def __init__(self, store, report: Report, *, present: Callable[[str], bool] | None = None,
                 bad: set[str] | None = None, head: Callable[[str], bytes] | None = None) -> None:
        self.store = store
        self.report = report
        self._present = present
        self._head = head
        self.bad = bad if bad is not None else set()
        self.marks: dict[str, int] = {}
        self.kinds: dict[str, str] = {}
        self._edges: dict[str, Edges] = {}
        self.structured_read = 0  # trees/records opened (each at most once)

    def has(self, oid: str) -> bool:
        if self._present is not None and self._present(oid):
            return True
        return self.store.has(oid)

    def kind(self, oid: str) -> str:
        """The object's kind, from its header (cached). Raises ObjectMissing/CorruptObject."""
        k = self.kinds.get(oid)
        if k is None:
            head = self._head(oid) if self._head is not None else \
                self.store.read_head(oid, envelope.HEADER_SIZE)
            k = self.kinds[oid] = kind_of_header(head)
        return k

    def edges(self, oid: str, kind: str) -> Edges:
        """The object's edges (cached). Raises ObjectMissing, CorruptObject, FormatError."""
        e = self._edges.get(oid)
        if e is None:
            if kind == BLOB:
                return NO_EDGES
            data = self.store.get(oid, max_size=envelope.MAX_STRUCT_SIZE)
            self.structured_read += 1
            e = self._edges[oid] = edges_of(kind, data)
        return e

    def walk(self, oid: str, hint: str | None, *, bit: int = 1, label: str,
             required: bool = True) -> bool:
        """Mark `oid` and everything it reaches with `bit`.

        Args:
            hint: the kind when the referrer knows it (a pointer, a tree entry), else
                None and the header decides.
            label: what named the root, for problem messages.
            required: report `oid` itself when missing (its own edges carry their own).
        Returns:
            True when something required below the root is missing or broken.
        """
        broken = False
        marks, kinds, bad, present = self.marks, self.kinds, self.bad, self._present
        stack: list[tuple[str, str | None, str, bool]] = [(oid, hint, "", required)]
        while stack:
            cur, k, where, req = stack.pop()
            if marks.get(cur, 0) & bit:
                continue
            if not self.has(cur):
                if req:
                    self.report("missing", cur, f"{where or 'root'} of {label}")
                    broken = True
                continue
            if cur in bad:
                marks[cur] = marks.get(cur, 0) | bit
                broken = True
                continue
            try:
                # A referrer's hint is trusted: a blob is user data (it may start with
                # anything) and a structured object's decoder checks its own header.
                # Only an id named without a kind (a provider root, an optional edge)
                # costs a header read.
                if k is None:
                    k = self.kind(cur)
                e = self.edges(cur, k)
            except ObjectMissing:
                if req:
                    self.report("missing", cur, f"{where or 'root'} of {label}")
                    broken = True
                continue
            except (CorruptObject, FormatError) as exc:
                marks[cur] = marks.get(cur, 0) | bit
                bad.add(cur)
                self.report(k if k in (TREE, RECORD) else "object", cur,
                            f"{exc.message} ({where or 'root'} of {label})")
                broken = True
                continue
            marks[cur] = marks.get(cur, 0) | bit
            kinds.setdefault(cur, k)
            if e.required or e.optional:
                sub = f"{where}/{cur[:12]}" if where else cur[:12]
                for child, ck in e.required:
                    m = marks.get(child, 0)
                    if m & bit:
                        continue
                    if ck == BLOB and present is not None and child not in bad and present(child):
                        # A blob its referrer names is only checked present, never read:
                        # mark it here rather than through the stack (most of a store).
                        marks[child] = m | bit
                        if child not in kinds:
                            kinds[child] = BLOB
                        continue
                    stack.append((child, ck, sub, True))
                for child in e.optional:
                    if not marks.get(child, 0) & bit:
                        stack.append((child, None, sub, False))
        return broken

    def reachable_from(self, bit: int) -> Iterator[str]:
        """Every id marked with `bit`."""
        return (o for o, m in self.marks.items() if m & bit)


def deletion_order(garbage: list[str], walker: Walker, *, first: Callable[[str], Any]
                   ) -> tuple[dict[str, str], list[list[str]]]:
    """The kind of each garbage object, and the order to delete the garbage in.

    Args:
        garbage: the ids to delete (gc's plan), all present.
        walker: reads and caches headers and edges.
        first: a sort key per id; lower keys are classified first.
            Those that may be structured go first (gc: the zstd-form ones, then the
            small raw ones), so that the blobs their referrers name need no read.

    Returns (kinds, levels): each level is deleted, and made durable, before the next
    starts; every object comes after each garbage object that names it (required
    edges, and optional ones across layers), and otherwise records and entries come
    first, then trees, then blobs (spec/gc.md, "Deletion order").

    Each garbage record, entry and tree is read once. A blob is read only when no
    garbage tree or record names it: a referrer's hint is trusted, as in marking (a
    blob is user data, whatever its first bytes). So the objects `first` ranks low go
    first, and the other blobs their trees name are never opened.

    The hint wins over the header either way round: an object whose header was read
    first (it looked like a tree or record: a small user file may start with the
    envelope magic) and which a garbage referrer then names as a blob is a blob; what
    its header made it name is dropped. Its referrer is still ordered before it,
    whichever it was classified as; and an object any referrer names as structured
    stays structured (ordered before what it names): more order, never less.
    """
    members = set(garbage)
    kinds: dict[str, str] = {}
    required: dict[str, list[str]] = {}
    optional: dict[str, list[str]] = {}
    named_as_blob: set[str] = set()
    guessed: set[str] = set()  # classified by their header alone: no referrer named them

    def as_blob(oid: str) -> None:
        """A referrer names `oid` as a blob: that trumps a kind read from its header."""
        if oid not in kinds:
            named_as_blob.add(oid)
        elif oid in guessed and kinds[oid] != BLOB:
            kinds[oid] = BLOB
            required.pop(oid, None)
            optional.pop(oid, None)
            guessed.discard(oid)

    def header_kind(oid: str) -> str:
        try:
            return walker.kind(oid)
        except TallyError:
            return BLOB  # unreadable garbage: no edges, deleted with the blobs

    def edges(oid: str, k: str) -> Edges:
        if k == TREE:  # garbage: its ids are all the order needs (tree_children)
            return tree_children(walker.store.get(oid, max_size=envelope.MAX_STRUCT_SIZE))
        return walker.edges(oid, k)

    def expand(oid: str, hint: str | None) -> None:
        stack: list[tuple[str, str | None]] = [(oid, hint)]
        while stack:
            cur, k = stack.pop()
            if cur in kinds:
                continue
            if k is None:
                k = header_kind(cur)
                guessed.add(cur)
            kinds[cur] = k
            if k == BLOB:
                continue
            try:
                e = edges(cur, k)
            except TallyError:
                # A referrer's hint that does not decode: the header may know better.
                hk = header_kind(cur)
                if hk in (k, BLOB):
                    continue  # undecodable garbage names nothing we can see
                try:
                    e = edges(cur, hk)
                except TallyError:
                    continue
                kinds[cur] = hk
            req = []
            for c, ck in e.required:
                if c in members and c != cur:
                    req.append(c)
                    if ck == BLOB:
                        as_blob(c)
                    elif c not in kinds:
                        stack.append((c, ck))
            required[cur] = req
            optional[cur] = [c for c in e.optional if c in members and c != cur]

    for oid in sorted(garbage, key=first):
        if oid not in kinds and oid not in named_as_blob:
            expand(oid, None)
    for oid in named_as_blob:
        kinds.setdefault(oid, BLOB)

    # Kahn's algorithm over the structured garbage, taking each time the ready objects
    # of the lowest layer. Blobs name nothing and are the last layer, so they form one
    # last level and need no bookkeeping (most of the garbage).
    structured = [o for o in garbage if kinds[o] != BLOB]
    layer = {o: LAYER.get(kinds[o], 0) for o in structured}
    indeg = dict.fromkeys(structured, 0)
    children: dict[str, list[str]] = {}
    for p, req in required.items():
        lp = layer[p]
        # An optional edge within a layer (a record's parent record) is not ordered:
        # a present record may name an absent parent, and ordering such chains would
        # cost one barrier per generation.
        kids = [c for c in dict.fromkeys(req + [c for c in optional[p] if layer.get(c, 2) != lp])
                if c in indeg]
        children[p] = kids
        for c in kids:
            indeg[c] += 1
    ready: dict[int, list[str]] = {}
    for o, d in indeg.items():
        if d == 0:
            ready.setdefault(layer[o], []).append(o)
    levels: list[list[str]] = []
    while ready:
        level = sorted(ready.pop(min(ready)))  # the lowest layer that has ready objects
        levels.append(level)
        for o in level:
            for c in children.get(o, ()):
                indeg[c] -= 1
                if indeg[c] == 0:
                    ready.setdefault(layer[c], []).append(c)
    left = sorted(o for o, d in indeg.items() if d > 0)  # a cycle cannot happen; be total
    if left:
        levels.append(left)
    blobs = sorted(o for o in garbage if kinds[o] == BLOB)
    if blobs:
        levels.append(blobs)
    return kinds, levels


__all__ = ["Walker", "Edges", "edges_of", "kind_of_header", "register_edges", "tree_children",
           "deletion_order",
           "BLOB", "TREE", "RECORD", "LAYER", "KIND_BY_BYTE"]
