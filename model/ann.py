"""Candidates from an approximate-nearest-neighbour index, for catalogs too large to score whole.

A model scores an item by the dot product of the user's query vector with the item's row of the
item table, so the best items are a maximum-inner-product search. For a catalog of at least
`ANN_MIN_ITEMS` items, registering a version also writes its item table (`item_table.npy`, float32,
row 0 the padding) and a usearch HNSW index over it (`items.usearch`, inner product, keys = rows).
Serving memory-maps both: every worker process of a host shares one copy in the page cache. A
request takes the index's best `CANDIDATES` rows, scores them exactly against the table, and keeps
the top-k of those it may show (the search is widened, rarely, when the user has seen too many of them).

usearch was chosen over hnswlib and faiss because its index can be served from a memory-mapped
file (`view`); hnswlib and faiss's HNSW load a private copy into each process. Recall and build
time of the three are printed by `bench/ann_bench.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANN_MIN_ITEMS = 200_000  # below it, scoring the whole table takes well under a millisecond
TABLE_FILE = "item_table.npy"
INDEX_FILE = "items.usearch"
CANDIDATES = 200  # rows taken from the index per request; what the user has seen is left out of them
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 256


def build_index(table: np.ndarray, directory: Path) -> dict:
    """Write `table` [V + 1, D] and an HNSW index of its rows 1..V into `directory`; returns what
    the version's metrics keep about it."""
    from usearch.index import Index

    start = time.perf_counter()
    table = np.ascontiguousarray(table, dtype=np.float32)
    np.save(directory / TABLE_FILE, table)
    index = Index(
        ndim=table.shape[1],
        metric="ip",
        dtype="f32",
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )
    index.add(np.arange(1, len(table), dtype=np.uint64), table[1:])
    index.save(str(directory / INDEX_FILE))
    return {"library": "usearch", "items": len(table) - 1, "build_seconds": time.perf_counter() - start}


@dataclass
class ItemIndex:
    """A version's memory-mapped item table and index."""

    table: np.ndarray  # [V + 1, D], memory-mapped
    index: object  # usearch Index, a view of the file

    @classmethod
    def open(cls, directory: Path) -> ItemIndex:
        from usearch.index import Index

        index = Index.restore(str(directory / INDEX_FILE), view=True)
        index.expansion_search = EXPANSION_SEARCH
        # copy-on-write: pages stay shared (nothing writes to them), and torch gets a writable array
        return cls(np.load(directory / TABLE_FILE, mmap_mode="c"), index)

    def candidates(self, queries: np.ndarray, count: int) -> np.ndarray:
        """[B, count] rows of the items the index finds best for each query (0, the padding row,
        where it found fewer)."""
        count = min(count, len(self.table) - 1)
        found = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), count, threads=1)
        # one query gives one result with only what it found; a batch pads each row past its count
        keys = np.asarray(found.keys, dtype=np.uint64).reshape(len(queries), -1)
        counts = np.asarray(getattr(found, "counts", [keys.shape[1]])).reshape(-1, 1)
        rows = np.zeros((len(queries), count), dtype=np.int64)
        width = keys.shape[1]
        rows[:, :width] = np.where(np.arange(width) < counts, keys, 0).astype(np.int64)
        return rows
