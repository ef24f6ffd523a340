"""Candidates from an approximate-nearest-neighbour index, for catalogs too large to score whole.

A model scores an item by the dot product of the user's query vector with the item's row of the
item table, so the best items are a maximum-inner-product search. For a catalog of at least
`ANN_MIN_ITEMS` items, registering a version writes its item table (row 0 the padding) and a usearch
HNSW index over it (inner product, keys = rows) in two forms: float32 (`item_table.npy`,
`items.usearch`) and half precision with a sparser graph (`item_table.f16.npy`,
`items.f16.usearch`, the compressed form, served when it passed its check at registration:
model/lifecycle.py). Serving memory-maps one form's two files: every worker process of a host
shares one copy in the page cache. A request takes the index's best `CANDIDATES` rows, scores
them exactly against the table, and keeps the top-k of those it may show (the search is widened,
rarely, when the user has seen too many of them).

usearch was chosen over hnswlib and faiss because its index can be served from a memory-mapped
file (`view`); hnswlib and faiss's HNSW load a private copy into each process. Recall and build
time of the three are printed by `bench/ann_bench.py`. Measured there on a 339,708-row table
(500 test users, recall@10 of the served top-10 against scoring the whole table):

| index vectors, expansion_search / candidates | recall@10 | search, 1 query | index file |
|---|---|---|---|
| float32, 256 / 200 | 0.995 | 0.71 ms | 137 MB |
| float32, 128 / 100 | 0.991 | 0.40 ms | 137 MB |
| float16, 128 / 100 | 0.992 | 0.30 ms | 94 MB |
| int8 (usearch normalises: a cosine, not an inner product), 128 / 100 | 0.746 | 0.31 ms | 72 MB |

The compressed form also links fewer neighbours per node (`connectivity`). Measured once per
graph (a script beside the bench; usearch builds on several threads, so another build of the same
settings differs a little: the registered one of connectivity 6 gave 0.1517), with the float16
table, table and index against the float32 form's 224 MB, the same 500 users, and test NDCG@10
through the index against the float32 form's 0.1516 (every test user):

| float16, connectivity | recall@10 | files | test NDCG@10 |
|---|---|---|---|
| 16 | 0.992 | 137 MB (1.63x smaller) | 0.1516 |
| 8 | 0.978 | 116 MB (1.94x) | 0.1518 |
| 6 | 0.967 | 111 MB (2.03x) | 0.1518 |
| 4 | 0.936 | 106 MB (2.13x) | 0.1520 |

Connectivity 6 is the sparsest graph whose recall stays above 0.95.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANN_MIN_ITEMS = 200_000  # below it, scoring the whole table takes well under a millisecond
CANDIDATES = 100  # rows taken from the index per request; what the user has seen is left out of them
CONNECTIVITY = 16  # the float32 form's graph (the compressed form's: FORMS)
EXPANSION_ADD, EXPANSION_SEARCH = 128, 128


@dataclass(frozen=True)
class Form:
    table: str  # file of the item table, [V + 1, D]
    index: str  # file of the usearch index over its rows 1..V
    dtype: type  # of both
    usearch: str  # the index's name for it
    connectivity: int  # neighbours linked per node of the graph


FULL, COMPRESSED = "float32", "float16"  # the compressed form is served when it passed its check
FORMS = {
    FULL: Form("item_table.npy", "items.usearch", np.float32, "f32", CONNECTIVITY),
    COMPRESSED: Form("item_table.f16.npy", "items.f16.usearch", np.float16, "f16", 6),
}


def build_index(table: np.ndarray, directory: Path) -> dict:
    """Write `table` [V + 1, D] and an HNSW index of its rows 1..V into `directory`, in every form;
    returns what the version's metrics keep about them."""
    from usearch.index import Index

    built = {}
    for name, form in FORMS.items():
        start = time.perf_counter()
        rows = np.ascontiguousarray(table, dtype=form.dtype)
        np.save(directory / form.table, rows)
        index = Index(
            ndim=rows.shape[1],
            metric="ip",
            dtype=form.usearch,
            connectivity=form.connectivity,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        index.add(np.arange(1, len(rows), dtype=np.uint64), rows[1:])
        index.save(str(directory / form.index))
        built[name] = {
            "build_seconds": time.perf_counter() - start,
            "bytes": sum((directory / f).stat().st_size for f in (form.table, form.index)),
        }
    return {"library": "usearch", "items": len(table) - 1, "forms": built}


@dataclass
class ItemIndex:
    """A version's memory-mapped item table and index, in one form."""

    table: np.ndarray  # [V + 1, D], memory-mapped
    index: object  # usearch Index, a view of the file
    form: str = FULL  # which of FORMS

    @classmethod
    def open(cls, directory: Path, form: str = FULL) -> ItemIndex:
        from usearch.index import Index

        files = FORMS[form]
        index = Index.restore(str(directory / files.index), view=True)
        if index is None:  # usearch's answer for a file it cannot find
            raise FileNotFoundError(directory / files.index)
        index.expansion_search = EXPANSION_SEARCH
        # copy-on-write: pages stay shared (nothing writes to them), and torch gets a writable array
        return cls(np.load(directory / files.table, mmap_mode="c"), index, form)

    def candidates(self, queries: np.ndarray, count: int) -> np.ndarray:
        """[B, count] rows of the items the index finds best for each query (0, the padding row,
        where it found fewer); every row when `count` covers the table (a search may miss a few)."""
        count = min(count, len(self.table) - 1)
        if count == len(self.table) - 1:
            return np.tile(np.arange(1, count + 1), (len(queries), 1))
        found = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), count, threads=1)
        # one query gives one result with only what it found; a batch pads each row past its count
        keys = np.asarray(found.keys, dtype=np.uint64).reshape(len(queries), -1)
        counts = np.asarray(getattr(found, "counts", [keys.shape[1]])).reshape(-1, 1)
        rows = np.zeros((len(queries), count), dtype=np.int64)
        width = keys.shape[1]
        rows[:, :width] = np.where(np.arange(width) < counts, keys, 0).astype(np.int64)
        return rows
