"""The store's SQLite index: schema, connections in WAL mode, and errors users can act on.

One connection per operation (opened, used, closed): nothing stays locked or open between
calls, a forked or spawned process never shares a connection, and Windows can move the
folder once no call runs. Writers use ``BEGIN IMMEDIATE`` so that the revision number is
chosen, the folder renamed into place and the row inserted under one write lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .errors import CorrectionStoreError, CorruptStoreError

logger = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite"
FORMAT = "toothmcl-corrections"
FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    folder TEXT NOT NULL UNIQUE COLLATE NOCASE,
    modality TEXT NOT NULL,
    created_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    case_id TEXT NOT NULL REFERENCES cases (case_id),
    revision INTEGER NOT NULL CHECK (revision >= 1),
    created_utc TEXT NOT NULL,
    annotator TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (case_id, revision)
);
CREATE TRIGGER IF NOT EXISTS revisions_are_never_changed BEFORE UPDATE ON revisions
    BEGIN SELECT RAISE(ABORT, 'saved revisions are never changed'); END;
CREATE TRIGGER IF NOT EXISTS revisions_are_never_deleted BEFORE DELETE ON revisions
    BEGIN SELECT RAISE(ABORT, 'saved revisions are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS case_folders_are_never_changed BEFORE UPDATE OF folder ON cases
    BEGIN SELECT RAISE(ABORT, 'case folders are never changed'); END;
"""


def damaged_message(root: Path, detail: str) -> str:
    return (
        f"the index of corrections store {root} is damaged ({detail}); run "
        f"`toothmcl corrections check {root} --repair` to rebuild it from the saved revision "
        "folders (the damaged index is kept beside it)"
    )


class Index:
    """The SQLite file ``<store>/index.sqlite``.

    Args:
        root: the store folder.
        busy_timeout_s: how long a call waits for another process's write lock.
    """

    def __init__(self, root: Path, busy_timeout_s: float = 30.0):
        self.root = root
        self.path = root / INDEX_NAME
        self.busy_timeout_s = busy_timeout_s

    # -- connections ----------------------------------------------------------------------
    def _connect(self, create: bool) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode={'rwc' if create else 'rw'}"
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("%s: SQLite refused WAL mode (%s); is the store on a network drive?",
                               self.path, mode)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn SQLite errors into messages that say what to do."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if "locked" in text or "busy" in text:
                raise CorrectionStoreError(
                    f"corrections store {self.root} is busy (another process held it for more than "
                    f"{self.busy_timeout_s:.0f} s); try again"
                ) from None
            if "unable to open" in text or "readonly" in text or "read-only" in text:
                raise CorrectionStoreError(
                    f"cannot open {self.path} for writing ({exc}); check that the store folder is "
                    "writable and on a local drive"
                ) from None
            raise CorruptStoreError(damaged_message(self.root, str(exc)), str(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise CorruptStoreError(damaged_message(self.root, str(exc)), str(exc)) from None

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection whose statements all see one snapshot (a deferred transaction)."""
        with self._errors():
            conn = self._connect(create=False)
            try:
                conn.execute("BEGIN")
                yield conn
            finally:
                conn.close()  # a read transaction has nothing to commit

    @contextlib.contextmanager
    def write(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection holding the store's write lock; commits on success, else rolls back."""
        with self._errors():
            conn = self._connect(create=create)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                conn.close()

    # -- schema ---------------------------------------------------------------------------
    def create(self, created_utc: str) -> None:
        """Create the tables (idempotent: two processes may create one store at once)."""
        with self.write(create=True) as conn:
            for statement in SCHEMA.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            for key, value in (("format", FORMAT), ("version", str(FORMAT_VERSION)),
                               ("created_utc", created_utc)):
                conn.execute("INSERT OR IGNORE INTO store_info (key, value) VALUES (?, ?)", (key, value))

    def validate(self) -> None:
        """Refuse an index that is not ours or that a newer ToothMCL wrote."""
        with self.read() as conn:
            info = dict(conn.execute("SELECT key, value FROM store_info").fetchall())
        if info.get("format") != FORMAT:
            detail = f"format {info.get('format')!r} instead of {FORMAT!r}"
            raise CorruptStoreError(damaged_message(self.root, detail), detail)
        if int(info.get("version", 0)) > FORMAT_VERSION:
            raise CorrectionStoreError(
                f"corrections store {self.root} has format version {info['version']}, newer than "
                f"this ToothMCL understands ({FORMAT_VERSION}); update ToothMCL"
            )

    # -- rows -----------------------------------------------------------------------------
    @staticmethod
    def insert(conn: sqlite3.Connection, metadata: dict) -> None:
        conn.execute(
            "INSERT INTO revisions (case_id, revision, created_utc, annotator, metadata) VALUES (?, ?, ?, ?, ?)",
            (metadata["case_id"], metadata["revision"], metadata["created_utc"], metadata["annotator"],
             json.dumps(metadata)),
        )
