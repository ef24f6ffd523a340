"""`rtrec forget` and `rtrec privacy-audit`: forgetting a user, and finding where a user id still is.

`forget` does what DELETE /v1/users/{user_id} does: under the user's lock, the feedback log drops
the user's lines and records the deletion, and the online state becomes a tombstone. The next
nightly run forgets the rest (landing batch files, users.parquet, warehouse, marts, online rows).

`privacy-audit` searches every store and file the project writes under the data directory, and the
Redis online store when it is the one in use, for a user id in the places that hold user ids:
- parquet files (landing batch files, users.parquet, marts = Feast's offline store): every column
  whose name contains "user";
- JSON and JSON-lines files (feedback log, manifests, model registry files): every key containing
  "user" (a line that does not parse: the same key written in its text);
- the DuckDB warehouse: every table's columns whose name contains "user" (text or lists of text);
- SQLite databases (the Feast online store, the feedback log's index): columns whose name contains
  "user", and Feast's `entity_key` columns for the user's serialized entity key;
- Feast registries: every string value of the registry;
- other text files: the id as a whole word.
Item ids are not user ids, so a column or key that names items is not searched (an item may be
called like a user). Model weights and images hold no ids; the download cache holds public data
sets as they were published; dbt's folder holds compiled SQL and logs (code and unit-test
fixtures, no rows of data). All are listed as not searched. The deletion record itself
(landing/deletions.jsonl) names the user so that the deletion stays applied: it is listed apart.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from rtrec.settings import Settings
from rtrec.shared_log import traces_of

SQLITE_HEADER = b"SQLite format 3\x00"
TEXT_SUFFIXES = {".txt", ".log", ".csv", ".tsv", ".md", ".yaml", ".yml"}
NO_IDS = {".pt": "model weights", ".png": "image", ".lock": "lock file", ".tmp": "temporary file"}


@dataclass
class Audit:
    user_id: str
    found: list[tuple[str, str]] = field(default_factory=list)  # (place, what)
    searched: list[str] = field(default_factory=list)
    not_searched: list[tuple[str, str]] = field(default_factory=list)  # (place, why)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (place, why) the id stays there by design
    errors: list[tuple[str, str]] = field(default_factory=list)  # (place, error): the search failed


def _is_user_field(name: str) -> bool:
    return "user" in name.lower()


# -- files ----------------------------------------------------------------------------------------


def _search_parquet(path: Path, user_id: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    hits = []
    for name in (n for n in schema.names if _is_user_field(n)):
        column = pq.read_table(path, columns=[name]).column(name)
        kind = column.type
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            column = pc.list_flatten(column)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            column = column.cast(pa.string())
        count = pc.sum(pc.equal(column, user_id)).as_py() or 0
        if count:
            hits.append(f"column {name}: {count} row(s)")
    return hits


def _json_hits(value, user_id: str, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            here = f"{path}.{key}" if path else str(key)
            if _is_user_field(str(key)) and (inner == user_id or (isinstance(inner, list) and user_id in inner)):
                yield here
            elif isinstance(inner, (dict, list)):
                yield from _json_hits(inner, user_id, here)
    elif isinstance(value, list):
        for position, inner in enumerate(value):
            yield from _json_hits(inner, user_id, f"{path}[{position}]")


def _search_json_lines(path: Path, user_id: str) -> list[str]:
    written = re.compile(r'"[^"]*user[^"]*"\s*:\s*' + re.escape(json.dumps(user_id)), re.IGNORECASE)
    data = path.read_bytes()
    try:  # a JSON document, or one a line
        documents = [(None, json.loads(data))] if path.suffix == ".json" else None
    except ValueError:
        documents = None
    if documents is None:
        documents = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                documents.append((number, json.loads(line)))
            except ValueError:
                if written.search(line.decode("utf-8", "replace")):
                    documents.append((number, {"user_id (in a line that does not parse)": user_id}))
    hits = []
    for number, document in documents:
        where = f"line {number}: " if number is not None else ""
        hits.extend(f"{where}{key}" for key in _json_hits(document, user_id))
    return hits


def _search_text(path: Path, user_id: str) -> list[str]:
    text = path.read_bytes().decode("utf-8", "replace")
    word = re.compile(r"(?<![\w-])" + re.escape(user_id) + r"(?![\w-])")
    lines = [number for number, line in enumerate(text.splitlines(), 1) if word.search(line)]
    return [f"line {n}" for n in lines[:20]] + ([f"and {len(lines) - 20} more lines"] if len(lines) > 20 else [])


def _search_sqlite(path: Path, user_id: str, entity_key: bytes) -> list[str]:
    hits = []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as con:
        tables = [name for (name,) in con.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            for column in (row[1] for row in con.execute(f"pragma table_info({quoted})")):
                if _is_user_field(column):
                    value = user_id
                elif column == "entity_key":
                    value = entity_key
                else:
                    continue
                col = '"' + column.replace('"', '""') + '"'
                (count,) = con.execute(f"select count(*) from {quoted} where {col} = ?", (value,)).fetchone()
                if count:
                    hits.append(f"table {table}, column {column}: {count} row(s)")
    return hits


def _search_registry(path: Path, user_id: str) -> list[str]:
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
    from google.protobuf.json_format import MessageToDict

    registry = RegistryProto()
    registry.ParseFromString(path.read_bytes())

    def strings(value, where: str) -> Iterator[str]:
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from strings(inner, f"{where}.{key}" if where else key)
        elif isinstance(value, list):
            for inner in value:
                yield from strings(inner, where)
        elif value == user_id:
            yield where

    return sorted(set(strings(MessageToDict(registry), "")))


def _search_warehouse(path: Path, user_id: str) -> list[str]:
    import duckdb

    hits = []
    # the default configuration, as dbt-duckdb's in-process connection has (DuckDB refuses another)
    with duckdb.connect(str(path)) as con:
        columns = con.execute(
            """
            select table_schema, table_name, column_name, data_type
            from information_schema.columns
            join information_schema.tables using (table_catalog, table_schema, table_name)
            where table_type = 'BASE TABLE'
            order by all
            """
        ).fetchall()
        for schema, table, column, kind in columns:
            if not _is_user_field(column) or not kind.startswith("VARCHAR"):
                continue
            name = f'"{schema}"."{table}"'
            test = f'list_contains("{column}", ?)' if kind.endswith("[]") else f'"{column}" = ?'
            (count,) = con.execute(f"select count(*) from {name} where {test}", [user_id]).fetchone()
            if count:
                hits.append(f"table {table}, column {column}: {count} row(s)")
    return hits


# -- the audit ------------------------------------------------------------------------------------


def _user_entity_key(user_id: str, version: int) -> bytes:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user_id)])
    return serialize_entity_key(key, entity_key_serialization_version=version)


def _search_file(path: Path, rel: str, settings: Settings, audit: Audit, entity_key: bytes) -> None:
    user_id = audit.user_id
    with open(path, "rb") as handle:
        head = handle.read(4096)
    suffix = path.suffix.lower()
    if rel == "landing/deletions.jsonl":
        lines = _search_json_lines(path, user_id)
        if lines:
            audit.kept.append((rel, f"the deletion record, which keeps the deletion applied ({len(lines)} line(s))"))
        audit.searched.append(rel)
        return
    if path.parent.parent.name == "versions" and path.name == "vocab.json":
        audit.not_searched.append((rel, "a model's item vocabulary: item ids, no users"))
        return
    if suffix in NO_IDS or path.name.endswith((".db-wal", ".db-shm", ".sqlite-wal", ".sqlite-shm", ".wal")):
        audit.not_searched.append((rel, NO_IDS.get(suffix, "database journal (read with its database)")))
        return
    if suffix == ".parquet":
        hits = _search_parquet(path, user_id)
    elif suffix in (".json", ".jsonl"):
        hits = _search_json_lines(path, user_id)
    elif suffix == ".duckdb":
        hits = _search_warehouse(path, user_id)
    elif head.startswith(SQLITE_HEADER):
        hits = _search_sqlite(path, user_id, entity_key)
    elif path.parent == settings.feast_dir and path.name.startswith("registry"):
        hits = _search_registry(path, user_id)
    elif suffix in TEXT_SUFFIXES or (head and b"\x00" not in head):
        hits = _search_text(path, user_id)
    else:
        audit.not_searched.append((rel, "binary file of no known kind"))
        return
    audit.searched.append(rel)
    audit.found.extend((rel, hit) for hit in hits)


def _search_redis(settings: Settings, audit: Audit, project: str, version: int) -> None:
    import redis
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=audit.user_id)])
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    place = f"redis online store {settings.redis_url.rsplit('@', 1)[-1]}"
    if client.exists(_redis_key(project, key, entity_key_serialization_version=version)):
        audit.found.append((place, "the user's Feast entity key"))
    if client.exists(f"rtrec:user-lock:{audit.user_id}"):
        audit.found.append((place, "the user's lock key"))
    audit.searched.append(place)


def _feast_repo_config() -> tuple[str, int]:
    """The Feast project and entity key serialization version, as feature_store.yaml declares them."""
    import yaml

    from rtrec.feature_store import FEATURE_REPO_DIR

    config = yaml.safe_load((FEATURE_REPO_DIR / "feature_store.yaml").read_text())
    return config["project"], int(config.get("entity_key_serialization_version", 3))


def run_audit(settings: Settings, user_id: str) -> Audit:
    """Where `user_id` still appears: every file under the data directory, and Redis when in use."""
    audit = Audit(user_id)
    data_dir = settings.data_dir
    project, version = _feast_repo_config()
    entity_key = _user_entity_key(user_id, version)
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(data_dir).as_posix()
        if path.is_relative_to(settings.cache_dir) or path.is_relative_to(settings.dbt_dir):
            continue
        try:
            _search_file(path, rel, settings, audit, entity_key)
        except Exception as err:  # one unreadable place must not hide the others
            audit.errors.append((rel, f"{type(err).__name__}: {err}"))
    for folder, why in (
        (settings.cache_dir, "downloaded public data sets, as published"),
        (settings.dbt_dir, "dbt's compiled SQL and logs: the project's code and unit-test fixtures, no rows of data"),
    ):
        if folder.exists():
            audit.not_searched.append((folder.relative_to(data_dir).as_posix() + "/", why))
    if settings.online_store == "redis":
        try:
            _search_redis(settings, audit, project, version)
        except Exception as err:
            audit.errors.append(("redis online store", f"{type(err).__name__}: {err}"))
    if settings.feedback_log == "redis":
        place = f"shared feedback log {settings.feedback_log_url.rsplit('@', 1)[-1]}"
        try:
            audit.found.extend((place, what) for what in traces_of(settings.feedback_log_url, user_id))
            audit.searched.append(place)
        except Exception as err:
            audit.errors.append((place, f"{type(err).__name__}: {err}"))
    return audit


def print_audit(audit: Audit, console: Console) -> int:
    """Print the audit; the exit status: 0 when the id is found nowhere, 1 when it is found, 2 when
    a place could not be searched."""
    for place, what in audit.found:
        console.print(f"[red]found[/red]      {place}: {what}", soft_wrap=True, highlight=False)
    for place, why in audit.kept:
        console.print(f"kept       {place}: {why}", soft_wrap=True, highlight=False)
    for place, error in audit.errors:
        console.print(f"[yellow]unsearched[/yellow] {place}: {error}", soft_wrap=True, highlight=False)
    kinds: dict[str, int] = {}
    for _, why in audit.not_searched:
        kinds[why] = kinds.get(why, 0) + 1
    for why, count in sorted(kinds.items()):
        console.print(f"skipped    {count} place(s): {why}", soft_wrap=True, highlight=False)
    places = {place for place, _ in audit.found}
    if audit.found:
        console.print(f"{audit.user_id}: found in {len(places)} of {len(audit.searched)} places searched")
        return 1
    if audit.errors:
        console.print(f"{audit.user_id}: not found in {len(audit.searched)} places, but {len(audit.errors)} failed")
        return 2
    console.print(f"{audit.user_id}: found nowhere ({len(audit.searched)} places searched)")
    return 0


# -- forgetting -----------------------------------------------------------------------------------


def forget(settings: Settings, user_id: str, console: Console) -> int:
    """Forget the user as DELETE /v1/users/{user_id} does; the exit status (0: done, 1: the feedback
    log holds the deletion but the online state could not be cleared: the API's workers finish it
    once the store is back, or run it again)."""
    from rtrec.feature_store import open_store
    from rtrec.landing import ensure_landing_zone
    from rtrec.online_state import LockTimeout, UserLocks, UserStateTable
    from serving.feedback_log import open_feedback_log
    from serving.forgetting import forget as forget_user

    ensure_landing_zone(settings.landing_dir)
    table = UserStateTable(open_store(settings))
    redis_url = settings.redis_url if settings.online_store == "redis" else None
    locks = UserLocks(settings.feast_dir / "locks", redis_url, settings.redis_timeout_seconds, wait=10)
    try:
        forgetting, cleared = forget_user(table, locks, open_feedback_log(settings), user_id)
    except LockTimeout:
        console.print(f"[yellow]{user_id}: the user's events are being written; nothing was forgotten, run it again")
        return 1
    if not cleared:
        console.print(
            f"[yellow]{user_id}: {forgetting.removed} feedback line(s) removed and the deletion recorded, "
            "but the online state could not be cleared now: the API's workers clear it once the store is back "
            "(or run this again)[/yellow]",
            soft_wrap=True,
        )
        return 1
    console.print(
        f"{user_id}: forgotten at {forgetting.deleted_at.isoformat()} ({forgetting.removed} feedback line(s) "
        "removed, online state cleared); the next nightly run removes the rest",
        soft_wrap=True,
        highlight=False,
    )
    return 0
