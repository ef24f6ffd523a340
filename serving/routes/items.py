"""Catalog lookup: title, category and price of the items asked for, from dbt's item_features mart.

The table is read from `marts_dir/item_features.parquet` and kept until the file changes (its
mtime and size), so the nightly run's new catalog shows without a restart.
"""

import threading
from pathlib import Path
from typing import Annotated

import pyarrow.parquet as pq
from fastapi import APIRouter, HTTPException, Query

from serving.deps import SettingsDep
from serving.schemas import CatalogItem, Items

router = APIRouter()
MAX_IDS = 100
MAX_ID_CHARS = 128
COLUMNS = ("item_id", "title", "category", "price")


class CatalogTable:
    """item_id -> CatalogItem for one parquet file, reloaded when the file's mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp: tuple[int, int] | None = None
        self.items: dict[str, CatalogItem] = {}
        self.lock = threading.Lock()

    def get(self) -> dict[str, CatalogItem]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self.lock:
            if stamp != self.stamp:
                self.items = self._read()
                self.stamp = stamp
            return self.items

    def _read(self) -> dict[str, CatalogItem]:
        present = set(pq.read_schema(self.path).names)
        table = pq.read_table(self.path, columns=[c for c in COLUMNS if c in present]).to_pydict()
        n = len(table["item_id"])
        column = lambda name: table.get(name, [None] * n)  # noqa: E731  (older marts have no title)
        return {
            str(item_id): CatalogItem(
                item_id=str(item_id),
                title=title,
                category=category,
                price=None if price is None or price != price else float(price),  # NaN -> null
            )
            for item_id, title, category, price in zip(
                table["item_id"], column("title"), column("category"), column("price")
            )
        }


_tables: dict[Path, CatalogTable] = {}
_tables_lock = threading.Lock()


def catalog_table(marts_dir: Path) -> CatalogTable:
    path = marts_dir / "item_features.parquet"
    with _tables_lock:
        return _tables.setdefault(path, CatalogTable(path))


def parse_ids(ids: str) -> list[str]:
    """Comma-separated ids -> unique ids in the order given; a 422 naming `ids` when one is bad."""

    def invalid(msg: str) -> HTTPException:
        return HTTPException(422, [{"loc": ["query", "ids"], "msg": msg, "type": "value_error"}])

    parts = ids.split(",")
    if len(parts) > MAX_IDS:
        raise invalid(f"ids: at most {MAX_IDS} ids per request, got {len(parts)}")
    for n, part in enumerate(parts, 1):
        if not 1 <= len(part) <= MAX_ID_CHARS:
            raise invalid(f"ids: id {n} must be 1–{MAX_ID_CHARS} characters, got {len(part)}")
    return list(dict.fromkeys(parts))


@router.get("/v1/items", response_model=Items)
def items(
    settings: SettingsDep,
    ids: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_IDS * (MAX_ID_CHARS + 1),
            description=f"Comma-separated item ids: at most {MAX_IDS}, each 1–{MAX_ID_CHARS} characters.",
            examples=["i1,i2"],
        ),
    ],
) -> Items:
    """Title, category and price of each item asked for, from the catalog the server loads."""
    wanted = parse_ids(ids)
    catalog = catalog_table(settings.marts_dir).get()
    return Items(items=[catalog[i] for i in wanted if i in catalog], missing=[i for i in wanted if i not in catalog])
