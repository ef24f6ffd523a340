"""The catalog as serving sees it: the popular list and the items that may be recommended.

It is read from dbt's item_features mart at startup and again whenever that file changes (its
mtime, size or inode), so the nightly run's new popularity shows without a restart. A file that
is missing or cannot be read leaves the previous catalog in place (empty before the first one)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from serving import metrics

log = logging.getLogger("rtrec.serving")
POPULAR = 200


@dataclass(frozen=True)
class CatalogSnapshot:
    """One consistent catalog: a request uses one snapshot throughout."""

    popular: list[tuple[str, float]] = field(default_factory=list)
    sellable: frozenset[str] = frozenset()

    def top(self, k: int, exclude: set[str]) -> list[tuple[str, float]]:
        return [(i, s) for i, s in self.popular if i not in exclude][:k]


def read_snapshot(path: Path) -> CatalogSnapshot:
    frame = pq.read_table(path, columns=["item_id", "popularity_7d", "popularity_all"]).to_pandas()
    frame = frame.sort_values(["popularity_7d", "popularity_all", "item_id"], ascending=[False, False, True])
    top = frame.head(POPULAR)
    popular = list(zip(top["item_id"], (top["popularity_7d"] + top["popularity_all"] / 1e6).astype(float)))
    return CatalogSnapshot(popular, frozenset(frame["item_id"]))


class Catalog:
    """Popular items for cold start and fallback, and the sellable item ids, from item_features."""

    def __init__(self, marts_dir: Path) -> None:
        self.path = marts_dir / "item_features.parquet"
        self.current = CatalogSnapshot()
        self.error: str | None = None
        self._stamp: tuple[int, int, int] | None = None  # of the file read (or that failed) last
        self._mutex = threading.Lock()
        self.refresh()

    @property
    def popular(self) -> list[tuple[str, float]]:
        return self.current.popular

    @property
    def sellable(self) -> frozenset[str]:
        return self.current.sellable

    def top(self, k: int, exclude: set[str]) -> list[tuple[str, float]]:
        return self.current.top(k, exclude)

    def refresh(self) -> bool:
        """Read the mart again if it changed since the last read; True when a new catalog was loaded."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._mutex:
            if stamp == self._stamp:
                return False
            self._stamp = stamp  # a damaged file is tried again only once it changes
            try:
                snapshot = read_snapshot(self.path)
            except Exception as err:
                metrics.CATALOG_LOAD_FAILURES.inc()
                self.error = f"{self.path.name} could not be read: {type(err).__name__}: {err}"[:500]
                log.error("%s; keeping the catalog of %d items", self.error, len(self.current.sellable))
                return False
            self.current, self.error = snapshot, None
        log.info("catalog loaded: %d items", len(snapshot.sellable))
        return True
