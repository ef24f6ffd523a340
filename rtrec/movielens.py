"""MovieLens importer: ratings become `rating` events, movies the catalog (first genre as category).

Reads the three layouts in circulation: MovieLens-100k (``u.data``/``u.item``/``u.user``),
RecBole's atomic files (``*.inter``/``*.item``/``*.user``) and MovieLens-1M (``ratings.dat``/
``movies.dat``/``users.dat``). A malformed line stops the import with the file and line named.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from rtrec.landing import EVENT_SCHEMA, ITEM_SCHEMA, USER_SCHEMA, reset_batch_data, write_json, write_parquet_atomically

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
RECBOLE_WHEEL = "recbole==1.2.1"
SAMPLES = {"ml-100k": "recbole/dataset_example/ml-100k/"}


class MovieLensError(ValueError):
    """A data set that cannot be imported; the message names the file and line."""


@dataclass(frozen=True)
class Layout:
    name: str
    ratings: str
    movies: str
    users: str
    sep: str
    header: bool


LAYOUTS = (
    Layout("ml-100k", "u.data", "u.item", "u.user", "\t", False),
    Layout("ml-1m", "ratings.dat", "movies.dat", "users.dat", "::", False),
)


def _detect(folder: Path) -> tuple[Layout, dict[str, Path]]:
    if not folder.is_dir():
        raise MovieLensError(f"{folder}: not a folder")
    for layout in LAYOUTS:
        if (folder / layout.ratings).exists():
            files = {k: folder / getattr(layout, k) for k in ("ratings", "movies", "users")}
            return layout, files
    inter = sorted(folder.glob("*.inter"))
    if inter:
        stem = inter[0].with_suffix("")
        files = {"ratings": inter[0], "movies": stem.with_suffix(".item"), "users": stem.with_suffix(".user")}
        return Layout("recbole", "", "", "", "\t", True), files
    raise MovieLensError(f"{folder}: no u.data, ratings.dat or *.inter file found")


def _lines(path: Path, sep: str, fields: int, header: bool) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a text file, rejecting lines with too few fields."""
    if not path.exists():
        raise MovieLensError(f"{path}: file not found")
    with path.open(encoding="latin-1", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if header and number == 1:
                continue
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split(sep)
            if len(parts) < fields:
                raise MovieLensError(f"{path}:{number}: expected {fields} fields, found {len(parts)} (truncated?)")
            yield number, parts


def _number(path: Path, number: int, text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise MovieLensError(f"{path}:{number}: {what} {text!r} is not a number") from None


def _read_ratings(path: Path, layout: Layout) -> pa.Table:
    users, items, values, stamps = [], [], [], []
    for number, (user, item, rating, stamp, *_) in _lines(path, layout.sep, 4, layout.header):
        values.append(_number(path, number, rating, float, "rating"))
        stamps.append(int(_number(path, number, stamp, float, "timestamp")))
        users.append(user)
        items.append(item)
    if not users:
        raise MovieLensError(f"{path}: no ratings")
    ts = [datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for s in stamps]
    return pa.table(
        {
            "event_id": [f"ml-{k}" for k in range(len(users))],
            "user_id": users,
            "item_id": items,
            "event_type": ["rating"] * len(users),
            "ts": ts,
            "value": values,
            "request_id": pa.nulls(len(users), pa.string()),
        },
        schema=EVENT_SCHEMA,
    )


def _read_movies(path: Path, layout: Layout) -> pa.Table:
    ids, titles, genres = [], [], []
    if layout.name == "ml-100k":
        for number, parts in _lines(path, "|", 5 + len(ML100K_GENRES), False):
            flags = parts[5 : 5 + len(ML100K_GENRES)]
            if any(flag not in ("0", "1") for flag in flags):
                raise MovieLensError(f"{path}:{number}: genre flags must be 0 or 1")
            ids.append(parts[0])
            titles.append(parts[1])
            genres.append([g for g, flag in zip(ML100K_GENRES, flags) if flag == "1"])
    elif layout.name == "ml-1m":
        for _, (movie, title, names, *_) in _lines(path, "::", 3, False):
            ids.append(movie)
            titles.append(title)
            genres.append(names.split("|"))
    else:
        for _, parts in _lines(path, "\t", 2, True):
            ids.append(parts[0])
            titles.append(parts[1])
            genres.append(parts[3].split() if len(parts) > 3 else [])
    return pa.table(
        {
            "item_id": ids,
            "title": titles,
            "category": [g[0] if g else "unknown" for g in genres],
            "price": pa.nulls(len(ids), pa.float64()),
            "description": [" ".join(g) for g in genres],
        },
        schema=ITEM_SCHEMA,
    )


def _read_users(path: Path, layout: Layout) -> pa.Table:
    # (user, age, gender, occupation) field positions per layout
    positions = {"ml-100k": ("|", 5, (0, 1, 2, 3)), "ml-1m": ("::", 5, (0, 2, 1, 3))}
    sep, fields, (u, a, g, o) = positions.get(layout.name, ("\t", 5, (0, 1, 2, 3)))
    rows = [(p[u], _number(path, n, p[a], int, "age"), p[g], p[o]) for n, p in _lines(path, sep, fields, layout.header)]
    user_ids, ages, genders, occupations = (list(col) for col in zip(*rows)) if rows else ([], [], [], [])
    return pa.table(
        {
            "user_id": user_ids,
            "segment": pa.nulls(len(rows), pa.string()),
            "age": pa.array(ages, pa.int32()),
            "gender": genders,
            "occupation": occupations,
        },
        schema=USER_SCHEMA,
    )


def import_movielens(folder: Path, landing: Path) -> dict:
    """Replace the landing zone's batch data with a MovieLens data set; returns the manifest."""
    layout, files = _detect(folder)
    ratings = _read_ratings(files["ratings"], layout)
    movies = _read_movies(files["movies"], layout)
    users = _read_users(files["users"], layout)
    reset_batch_data(landing)
    write_parquet_atomically(ratings, landing / "events" / "events-00000.parquet")
    write_parquet_atomically(movies, landing / "items.parquet")
    write_parquet_atomically(users, landing / "users.parquet")
    manifest = {
        "source": str(folder),
        "format": layout.name,
        "clean_events": ratings.num_rows,
        "dirty": {},
        "total_rows": ratings.num_rows,
        "items": movies.num_rows,
        "users": users.num_rows,
        "files": ["events-00000.parquet"],
    }
    write_json(landing / "manifest.json", manifest)
    return manifest


def fetch_sample(name: str, cache_dir: Path) -> Path:
    """Unpack a packaged MovieLens sample (from the RecBole wheel on the package index) into the cache."""
    if name not in SAMPLES:
        raise MovieLensError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    target = cache_dir / name
    if target.is_dir() and any(target.glob("*.inter")):
        return target
    wheels = cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("recbole-*.whl")):
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), RECBOLE_WHEEL],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise MovieLensError(f"could not download {RECBOLE_WHEEL}: {done.stderr.strip()[-500:]}")
    wheel = sorted(wheels.glob("recbole-*.whl"))[0]
    prefix = SAMPLES[name]
    tmp = target.with_name(target.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(prefix) and not member.endswith((".kg", ".link", "/")):
                (tmp / Path(member).name).write_bytes(archive.read(member))
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target
