"""Storage figures: dedup, the cost of keeping versions, scrub and garbage collection.

Everything runs in this process on the backend's own services over a fresh SQLite
database and a local block store in a temporary directory, with content cut, hashed,
compressed and encrypted by the client's real chunk pipeline (`mountfs.chunks`) under
convergent keys from a real `Keyring`; only HTTP is left out (its cost is measured by the
backend and fs suites). The figures are properties of the storage layer:

- `storage.dedup`: the same mixed data (half random, half source-like text) written as
  two files of one account and a third file of a second account; stored bytes and the
  deployment's dedup ratio (logical ÷ unique plaintext; 3.0 is perfect) and compression
  ratio, from `backend.services.stats`.
- `storage.versions`: a file edited in place 100 times (a few bytes each, at random
  offsets), each edit committed as a new version through FastCDC: stored bytes ÷ the
  file's size. 1.0 would be free versioning; a whole copy per edit would be 101.
- `storage.scrub`: `mountfs admin scrub` over that store: MB/s of objects read and hashed.
- `storage.gc`: everything purged, then one `gc.collect`: objects deleted per second.
"""

from __future__ import annotations

import random
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .chunks import mixed_data
from .harness import Benchmark, FixedReference, Metric, Options, Report, Sample, Stopwatch, Suite

if TYPE_CHECKING:
    from backend.db.engine import Database
    from backend.security import Keyring
    from backend.services.types import ChunkRef, NodeId, Principal, RevisionId
    from backend.store.local import LocalBlockStore

__all__ = ["SUITE"]

MiB = 1 << 20
DEDUP_BYTES = {True: 64 * MiB, False: 1024 * MiB}
EDIT_FILE = {True: 16 * MiB, False: 100 * MiB}
EDITS = {True: 20, False: 100}
COLUMN = "mountfs"

METRICS = {
    "storage.dedup": Metric("dedup ratio, 2 paths × 2 accounts", "×", True),
    "storage.versions": Metric("stored ÷ file size after small edits", "×", False),
    "storage.scrub": Metric("scrub", "MB/s", True),
    "storage.gc": Metric("gc", "objects/s", True),
}
SUMMARIES = {
    "storage.dedup": "the same data under two paths and two accounts: dedup ratio",
    "storage.versions": "100 small edits of one file: stored bytes ÷ file size",
    "storage.scrub": "admin scrub: objects read and verified, MB/s",
    "storage.gc": "garbage collection after a purge of everything, objects/s",
}


class _Backend:
    """A migrated database, a block store and a keyring in `root` (the services only)."""

    def __init__(self, root: Path) -> None:
        import secrets

        from backend.db.engine import Database, make_engine
        from backend.db.migrate import upgrade
        from backend.security import Keyring
        from backend.store.local import LocalBlockStore
        from backend.store.signing import UrlSigner

        url = f"sqlite:///{root / 'meta.sqlite3'}"
        upgrade(url)
        self.db: Database = Database(make_engine(url))
        self.store: LocalBlockStore = LocalBlockStore(
            root / "blocks", UrlSigner(secrets.token_bytes(32)), 300, 16 * MiB
        )
        self.store.open()
        self.keys: Keyring = Keyring(secrets.token_bytes(32))

    def account(self) -> Principal:
        from backend.services import accounts

        name = f"bench-{uuid.uuid4().hex[:10]}"
        accounts.create_account(self.db, name, "a long bench password", None)
        login = accounts.login(self.db, name, "a long bench password", "bench")
        return accounts.authenticate(self.db, login.token)

    def new_file(self, who: Principal, name: str) -> NodeId:
        from backend.services import tree
        from backend.services.types import NodeId, NodeKind

        node_id = NodeId(str(uuid.uuid4()))
        with self.db.write() as conn:
            tree.create_node(
                conn, who, tree.NewNode(node_id, who.root_id, name, NodeKind.FILE, 0o644, 1)
            )
        return node_id

    def commit(
        self,
        who: Principal,
        node_id: NodeId,
        data: bytes,
        base: RevisionId | None,
        sealed: dict[tuple[int, int, str], tuple[ChunkRef, bytes]],
    ) -> RevisionId:
        """Cut, seal (reusing `sealed` for unchanged chunks), upload what the account
        lacks, commit; the new revision's id."""
        from backend.services import chunks, revisions
        from backend.services.revisions import NewRevision
        from backend.services.types import ChunkRef, ObjectName, PlainHash, RevisionId
        from mountfs.chunks.cdc import cut
        from mountfs.chunks.pipeline import plain_hash, seal_chunk

        refs = []
        view = memoryview(data)
        for span in cut(view):
            piece = view[span.offset : span.end]
            digest = plain_hash(piece)
            key = (span.offset, span.length, digest)
            if key not in sealed:
                item = seal_chunk(piece, self.keys.key(digest), expected_hash=digest)
                ref = ChunkRef(
                    offset=span.offset,
                    size=span.length,
                    hash=PlainHash(digest),
                    object=ObjectName(item.object),
                    stored_size=item.stored_size,
                )
                sealed[key] = (ref, item.ciphertext)
            refs.append(sealed[key])
        with self.db.read() as conn:
            missing = set(chunks.unowned(conn, who.account_id, [r.object for r, _ in refs]))
        for ref, ciphertext in refs:
            if ref.object in missing:
                upload = self.store.begin_upload(ref.object, who.account_id)
                upload.write(ciphertext)
                upload.complete()
                missing.discard(ref.object)
        new = NewRevision(
            RevisionId(str(uuid.uuid4())), base, len(data), 1, tuple(r for r, _ in refs)
        )
        revisions.confirm_uploads(self.db, self.store, who, new, 1 << 40)
        with self.db.write() as conn:
            revisions.commit(conn, who, node_id, new, 1 << 40)
        return new.revision_id


def run(report: Report, options: Options, selected: tuple[str, ...]) -> None:
    """Every step runs (scrub and GC need the store the first two fill); only the
    selected figures are recorded."""
    from backend.services import gc, scrub, stats, tree, versions

    shown = report.table(
        "storage",
        "Storage: dedup, versioning overhead, scrub and GC (backend services, local store)",
        FixedReference((("target", 1.0),)),
    )

    class _Selected:
        def add(self, name: str, column: str, sample: Sample) -> None:
            if name in selected:
                shown.add(name, column, sample)

    table = _Selected()
    for run_index in range(options.runs):
        with tempfile.TemporaryDirectory(dir=options.workdir) as tmp:
            backend = _Backend(Path(tmp))
            try:
                size = DEDUP_BYTES[options.quick]
                report.progress(f"storage run {run_index + 1}: dedup of {size // MiB} MiB")
                data = mixed_data(size, seed=run_index)
                alice, bob = backend.account(), backend.account()
                sealed: dict[tuple[int, int, str], tuple[ChunkRef, bytes]] = {}
                for who, name in ((alice, "one"), (alice, "two"), (bob, "three")):
                    backend.commit(who, backend.new_file(who, name), data, None, sealed)
                del data
                with backend.db.read() as conn:
                    total = stats.deployment_stats(conn)
                note = (
                    f"{total.logical_bytes / MiB:,.0f} MiB written, "
                    f"{total.stored_bytes / MiB:,.0f} MiB stored, "
                    f"zstd {total.compression_ratio:.2f}×"
                )
                table.add(
                    "storage.dedup",
                    COLUMN,
                    Sample(METRICS["storage.dedup"], total.dedup_ratio, note),
                )

                file_size, edits = EDIT_FILE[options.quick], EDITS[options.quick]
                report.progress(
                    f"storage run {run_index + 1}: {edits} edits of {file_size // MiB} MiB"
                )
                rng = random.Random(run_index)
                content = bytearray(mixed_data(file_size, seed=100 + run_index))
                carol = backend.account()
                node = backend.new_file(carol, "edited")
                own: dict[tuple[int, int, str], tuple[ChunkRef, bytes]] = {}
                head = backend.commit(carol, node, bytes(content), None, own)
                for _ in range(edits):
                    at = rng.randrange(0, file_size - 16)
                    content[at : at + 16] = rng.randbytes(16)
                    head = backend.commit(carol, node, bytes(content), head, own)
                with backend.db.read() as conn:
                    mine = next(s for s in stats.account_stats(conn) if s.live_bytes == file_size)
                table.add(
                    "storage.versions",
                    COLUMN,
                    Sample(
                        METRICS["storage.versions"],
                        mine.stored_bytes / file_size,
                        f"{edits} edits of 16 B, {file_size // MiB} MiB file, "
                        f"{mine.versions} versions",
                    ),
                )

                report.progress(f"storage run {run_index + 1}: scrub")
                with Stopwatch() as sw:
                    found = scrub.scrub(backend.db, backend.store, grace=timedelta(days=1))
                if not found.clean:
                    raise RuntimeError(f"scrub found problems in a fresh store: {found}")
                table.add(
                    "storage.scrub",
                    COLUMN,
                    Sample(
                        METRICS["storage.scrub"],
                        found.bytes_checked / 1e6 / sw.seconds,
                        f"{found.objects_checked} objects, {found.bytes_checked / MiB:,.0f} MiB",
                    ),
                )

                report.progress(f"storage run {run_index + 1}: purge and gc")
                for who in (alice, bob, carol):
                    with backend.db.write() as conn:
                        for child in tree.list_children(conn, who, who.root_id, 1000, None).items:
                            tree.delete_node(conn, who, child.id, child.version)
                    with backend.db.write() as conn:
                        versions.purge(conn, who, None)
                with Stopwatch() as sw:
                    done = gc.collect(backend.db, backend.store, grace=timedelta(0))
                table.add(
                    "storage.gc",
                    COLUMN,
                    Sample(
                        METRICS["storage.gc"],
                        done.objects_deleted / sw.seconds,
                        f"{done.objects_deleted} objects, {done.bytes_deleted / MiB:,.0f} MiB",
                    ),
                )
            finally:
                backend.db.close()


SUITE = Suite(
    name="storage",
    benchmarks=tuple(Benchmark(name, SUMMARIES[name]) for name in METRICS),
    run=run,
)
