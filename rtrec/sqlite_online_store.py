"""Feast's SQLite online store, keeping the newer row as Feast's Redis store does.

Feast's SQLite store overwrites a stored row with whatever is written last. Then a nightly batch
write, stamped with the time dbt read the event log, would take back in time a user whose state a
real-time push (or a DELETE) changed after that: the batch row is older. This store skips a row
whose Feast event timestamp is not newer than the one stored for that entity, so the online state
never goes back in time, whichever writer comes last: the rule Feast's Redis store already follows.

The check and the write are one SQLite write transaction (BEGIN IMMEDIATE), so two processes
writing one entity cannot both pass the check with the same stored timestamp.

The database runs in write-ahead-log mode: a read never waits for a write nor a write for a read,
and a commit is one append to the log (synchronous=NORMAL: the log is fsynced at checkpoints). The
online state is derived data: every event is durable in the feedback log first and the nightly run
rebuilds the state from it, so a power cut can cost the last updates' freshness, never an event.
Writers of all processes take turns on an flock before they begin (rtrec/writer_turn.py): under
saturating POST load SQLite's own busy handler let one API worker's writer starve past its 5 s
timeout. A write that still times out raises `StoreBusy`: the store is up. SQLite stores event
timestamps in whole seconds (Feast's adapter), and the comparison is made on those. Each thread has
its own connection; a process's writes take turns on a mutex.

feature_repo/feature_store.yaml names it by its class path; its config is
`NewestWinsSqliteOnlineStoreConfig` (Feast finds it by that name).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _initialize_conn,
    _quote_id,
    _table_id,
    adapt_datetime_epoch,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import to_naive_utc

from rtrec.writer_turn import open_turn, writer_turn

CLASS_PATH = "rtrec.sqlite_online_store.NewestWinsSqliteOnlineStore"
Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]
WRITER_WAIT_SECONDS = 5.0  # as SQLite's own busy timeout
CHUNK = 500  # keys per lookup by `in (...)`: under SQLite's limit on the parameters of one statement (999+)


class NewestWinsSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["rtrec.sqlite_online_store.NewestWinsSqliteOnlineStore",] = CLASS_PATH


def _seconds(ts: datetime) -> int:
    """An event timestamp as SQLite holds it: whole seconds, through Feast's own adapter."""
    return adapt_datetime_epoch(to_naive_utc(ts))


class StoreBusy(TimeoutError):
    """The online database stayed locked by other writers past the busy timeout: the store is up."""


class NewestWinsSqliteOnlineStore(SqliteOnlineStore):
    _write_mutex = threading.Lock()
    _writer_fd: int | None = None
    _connections_mutex = threading.Lock()

    def _get_conn(self, config: RepoConfig):
        """This thread's connection. Feast shares one among all threads, and a read stepping through
        its rows on it while another thread begins a write fails one or the other ("another row
        available", "database is locked"); with one each, WAL lets reads run beside the write."""
        local = self.__dict__.setdefault("_threads", threading.local())
        conn = getattr(local, "conn", None)
        if conn is None:
            path = self._get_db_path(config)
            conn = _initialize_conn(path)
            conn.execute("pragma journal_mode=wal")  # kept in the database file; every process sees it
            conn.execute("pragma synchronous=normal")
            with self._connections_mutex:
                self.__dict__.setdefault("_connections", []).append(conn)
                if self._writer_fd is None:
                    self._writer_fd = open_turn(Path(path))
            local.conn = conn
        return conn

    def teardown(self, config: RepoConfig, tables, entities) -> None:
        """Close every thread's connection before Feast deletes the database (a connection left
        open on a deleted file would share its log's name with the next database there)."""
        with self._connections_mutex:
            for conn in self.__dict__.pop("_connections", []):
                conn.close()
            self.__dict__.pop("_threads", None)
        super().teardown(config, tables, entities)

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """This process's turn to write: threads take turns on a mutex, processes on the flock."""
        with self._write_mutex, writer_turn(self._writer_fd, WRITER_WAIT_SECONDS, StoreBusy):
            yield

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        conn = self._get_conn(config)
        name = _quote_id(_table_id(config.project, table, config.registry.enable_online_feature_view_versioning))
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(row[0], entity_key_serialization_version=version) for row in data]
        with self._writer():
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:
                if "locked" in str(err) or "busy" in str(err):
                    raise StoreBusy(f"online database busy: {err}") from err
                raise
            try:
                latest = self._stored_seconds(conn, name, keys)
                newer: dict[bytes, Row] = {}  # per entity, the newest row of the batch that beats the stored one
                for key, row in zip(keys, data):
                    stamp = _seconds(row[2])
                    if stamp > latest.get(key, -(2**62)):
                        latest[key] = stamp
                        newer[key] = row
            except BaseException:
                conn.rollback()
                raise
            # Feast's own write, inside the transaction begun above; it commits (or rolls back) at its end
            super().online_write_batch(config, table, list(newer.values()), None)
        if progress:
            progress(len(data))

    @staticmethod
    def _stored_seconds(conn, name: str, keys: list[bytes]) -> dict[bytes, int]:
        """The stored event timestamp (whole seconds) of each of `keys` that has a row."""
        unique, stored = list(dict.fromkeys(keys)), {}
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            stored.update(
                conn.execute(
                    f"select entity_key, max(cast(event_ts as integer)) from {name} "
                    f"where entity_key in ({marks}) group by entity_key",
                    chunk,
                ).fetchall()
            )
        return stored
