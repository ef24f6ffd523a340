"""The catalog as serving sees it: the popular list and the items that may be recommended."""

from pathlib import Path

import pyarrow.parquet as pq


class Catalog:
    """Popular items for cold start and fallback, and the sellable item ids, from item_features."""

    def __init__(self, marts_dir: Path) -> None:
        path = marts_dir / "item_features.parquet"
        self.popular: list[tuple[str, float]] = []
        self.sellable: set[str] = set()
        if path.exists():
            frame = pq.read_table(path, columns=["item_id", "popularity_7d", "popularity_all"]).to_pandas()
            frame = frame.sort_values(["popularity_7d", "popularity_all", "item_id"], ascending=[False, False, True])
            self.sellable = set(frame["item_id"])
            top = frame.head(200)
            self.popular = list(zip(top["item_id"], (top["popularity_7d"] + top["popularity_all"] / 1e6).astype(float)))

    def top(self, k: int, exclude: set[str]) -> list[tuple[str, float]]:
        return [(i, s) for i, s in self.popular if i not in exclude][:k]
