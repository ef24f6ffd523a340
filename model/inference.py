"""Inference for serving: recent (item_id, event_type) pairs in, top-k (item_id, score) out."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from model.ann import CANDIDATES, COMPRESSED, FULL, ItemIndex
from model.data import Vocabulary, gap_bucket, pad_left
from model.ease import Ease
from model.export import OnnxScores
from model.sasrec import ModelConfig, SASRec
from model.successors import Successors, served_successors
from rtrec.content import CONTENT_DIM
from rtrec.events import EVENT_INDEX

log = logging.getLogger("rtrec.model")

SUCCESSOR_CANDIDATES = 50  # an indexed catalog also re-scores the items a history's successor counts boost most


@dataclass
class Recommender:
    model: SASRec
    vocab: Vocabulary
    version: str
    onnx: OnnxScores | None = None  # the compressed form (model/export.py): scores in place of the model when set
    ann: ItemIndex | None = None  # a large catalog's memory-mapped table and index (model/ann.py)
    successors: Successors | None = None  # counts blended into the scores (model/successors.py)
    ease: Ease | None = None  # item-to-item weights over the whole seen set, blended after them (model/ease.py)

    @property
    def form(self) -> str:
        if self.ann is not None:
            return self.ann.form
        return "onnx" if self.onnx is not None else "float32"

    def __post_init__(self) -> None:
        self.model.eval()
        self.index = self.vocab.item_index()
        self.ids = np.array(["", *self.vocab.item_ids], dtype=object)
        if self.ann is not None:  # the registered table, shared by every worker through the page cache
            self.table = torch.from_numpy(self.ann.table)
        else:
            with torch.inference_mode():
                self.table = self.model.item_table().detach()  # [V + 1, D], computed once per version
        if self.onnx is not None:
            self.onnx = self.onnx.for_table(self.table)
        self.new_items = 0  # rows after the vocabulary's: items scored from their content alone
        self.content_stamp = None  # which state of the content file those rows come from (serving's)

    @torch.inference_mode()
    def with_new_items(self, items: pd.DataFrame) -> Recommender:
        """This model, also scoring the items of `items` (item_id, category, price, content_embedding:
        as rtrec/content.py keeps them) that it was never trained on, from their category, price and
        text embedding. Itself when the model reads no content, or when it finds candidates in an
        index (whose rows are the trained items); earlier new items are replaced, not added to."""
        if not self.model.cfg.content or self.ann is not None:
            return self
        known = self.vocab.n_items + 1
        items = items[~items["item_id"].isin(self.vocab.item_index())]
        vectors = np.zeros((len(items), CONTENT_DIM), dtype=np.float32)
        for row, vector in enumerate(items["content_embedding"]):
            vectors[row] = vector
        rows = self.model.new_item_rows(
            torch.from_numpy(self.vocab.category_index(items["category"])),
            torch.from_numpy(self.vocab.price_bucket(items["price"])),
            torch.from_numpy(vectors),
        )
        extended = copy.copy(self)
        extended.table = torch.cat([self.table[:known], rows])
        if self.onnx is not None:
            extended.onnx = self.onnx.for_table(extended.table)
        extended.ids = np.concatenate([self.ids[:known], np.asarray(items["item_id"], dtype=object)])
        extended.index = self.vocab.item_index() | {item: known + j for j, item in enumerate(items["item_id"])}
        extended.new_items = len(items)
        return extended

    @classmethod
    def load(cls, version_dir: Path, compressed: bool = True) -> Recommender:
        """The version in `version_dir`; with `compressed`, in its compressed form when the version
        has one that passed its check at training time (model/export.py; an index's: model/lifecycle.py)."""
        config = json.loads((version_dir / "config.json").read_text())
        vocab = Vocabulary.from_dict(json.loads((version_dir / "vocab.json").read_text()))
        model = SASRec.from_vocab(ModelConfig(**config["model"]), vocab)
        # memory-mapped: the weights' pages are shared by the workers that load the same version
        weights = torch.load(version_dir / "weights.pt", map_location="cpu", weights_only=True, mmap=True)
        model.load_state_dict(weights, assign=True)
        metrics_path = version_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        successors = served_successors(version_dir)
        check = metrics.get("compressed", {}) if compressed else {}
        if "ann" in metrics:  # the ONNX graph scores the whole table, which an index is there to avoid
            index = None
            if check.get("passed") and check.get("format") == COMPRESSED:
                try:
                    index = ItemIndex.open(version_dir, COMPRESSED)
                except Exception as err:  # the float32 form answers: the same top-k to half precision
                    log.warning(
                        "version %s: %s index not opened (%s); serving float32", version_dir.name, COMPRESSED, err
                    )
            if index is None:
                index = ItemIndex.open(version_dir, FULL)
            return cls(model, vocab, version_dir.name, ann=index, successors=successors)  # no EASE this large
        onnx = None
        if check.get("passed"):
            try:
                onnx = OnnxScores(version_dir / check["file"])
            except Exception as err:  # the float model still answers: the same top-k, only slower
                log.warning("version %s: compressed form not loaded (%s); serving float32", version_dir.name, err)
        return cls(model, vocab, version_dir.name, onnx, successors=successors, ease=Ease.load(version_dir))

    def indices(self, item_ids: Iterable[str]) -> list[int]:
        """The indices of the known items among `item_ids`."""
        return [self.index[i] for i in item_ids if i in self.index]

    def encode_history(self, history: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """Item and event-type indices of the known items in `history` (unknown ids are skipped)."""
        pairs = [(self.index[i], EVENT_INDEX.get(e, 0)) for i, e in history if i in self.index]
        pairs = pairs[-self.model.cfg.max_len :]
        items = np.array([p[0] for p in pairs], dtype=np.int64)
        return items, np.array([p[1] for p in pairs], dtype=np.int64)

    def _inputs(self, items: list[np.ndarray], events: list[np.ndarray], gaps: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Index-encoded histories, left-padded to the longest (at most max_len), and the gap buckets."""
        width = min(self.model.cfg.max_len, max(1, max((len(s) for s in items), default=1)))
        return (
            torch.from_numpy(pad_left(items, width)),
            torch.from_numpy(pad_left(events, width)),
            torch.from_numpy(np.asarray(gaps, dtype=np.int64)),
        )

    @torch.inference_mode()
    def scores(
        self,
        items: list[np.ndarray],
        events: list[np.ndarray],
        gaps: np.ndarray,
        seen: list[Sequence[int]] | None = None,
    ) -> torch.Tensor:
        """[B, V + 1] scores after each (index-encoded) history, given the gap bucket to now, with
        the version's blends added: the successor counts, and EASE over `seen` (each user's whole
        seen set, indices; the history when None); padding column included."""
        x, e, g = self._inputs(items, events, gaps)
        if self.onnx is not None:
            scores = self.onnx(x, e, g, self.table)
        else:  # float() copies only an index's half-precision table (scored whole: evaluation only)
            scores = self.model.scores(x, e, g, self.table.float())
        if self.successors is not None:
            scores = self.successors.add_to(scores, items)
        return scores if self.ease is None else self.ease.add_to(scores, items if seen is None else seen)

    @torch.inference_mode()
    def recommend_batch(
        self,
        histories: Sequence[Sequence[tuple[str, str]]],
        k: int = 10,
        excludes: Sequence[Iterable[str]] | None = None,
        idle_seconds: Sequence[float | None] | None = None,
        seen: Sequence[Iterable[str] | None] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k per history; idle_seconds: time since each user's last event (None: unknown); seen:
        every item each user has interacted with, which EASE reads (None: the history's items)."""
        encoded = [self.encode_history(h) for h in histories]
        known = [i for i, (items, _) in enumerate(encoded) if len(items)]
        out: list[list[tuple[str, float]]] = [[] for _ in histories]
        if not known:
            return out  # nothing known about these users: the caller's cold-start path answers
        idle = [np.nan if idle_seconds is None or idle_seconds[i] is None else idle_seconds[i] for i in known]
        inputs = [encoded[i][0] for i in known], [encoded[i][1] for i in known], gap_bucket(idle)
        banned = [self.indices(excludes[i]) if excludes else [] for i in known]
        if self.ann is None:  # every item is a candidate
            everything = None  # EASE reads each history's items where no seen set is given
            if seen is not None and self.ease is not None:
                everything = [items if seen[i] is None else self.indices(seen[i]) for i, items in zip(known, inputs[0])]
            rows, scores = None, self.scores(*inputs, everything)
            scores[:, 0] = float("-inf")  # the padding column
            for row, leave_out in enumerate(banned):
                scores[row, leave_out] = float("-inf")
        else:
            rows, scores = self.candidates(*inputs, banned, k)
        top = scores.topk(min(k, scores.shape[1] - (rows is None)), dim=1)
        for row, i in enumerate(known):
            values, indices = top.values[row].tolist(), top.indices[row].tolist()
            items = indices if rows is None else rows[row][indices].tolist()
            out[i] = [(self.ids[j], v) for j, v in zip(items, values) if v != float("-inf")]
        return out

    @torch.inference_mode()
    def candidates(
        self, items: list[np.ndarray], events: list[np.ndarray], gaps: np.ndarray, banned: list[list[int]], k: int
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Rows from the index for each history and their exact scores, -inf where the row is one of
        the history's `banned` or padding: ([B, C], [B, C]). The index's best CANDIDATES rows, widened
        (rarely: seen items are few among them) until each history has k rows it may be shown, and
        the SUCCESSOR_CANDIDATES items the version's successor counts boost most."""
        x, e, g = self._inputs(items, events, gaps)
        queries = self.model.next_query(x, e, g, self.table)  # [B, D]
        catalog = len(self.table) - 1
        need = np.minimum(k, catalog - np.array([len(b) for b in banned]))
        count = CANDIDATES
        while True:
            rows = self.ann.candidates(queries.numpy(), count)
            hidden = np.stack([np.isin(found, leave_out) for found, leave_out in zip(rows, banned)]) | (rows == 0)
            if count >= catalog or ((~hidden).sum(1) >= need).all():
                break
            count = min(4 * count, catalog)
        if self.successors is not None:
            boosts = self.successors.boost(items)
            extra = Successors.best(boosts, SUCCESSOR_CANDIDATES)
            hidden_extra = np.stack(
                [
                    np.isin(more, np.concatenate([found, leave_out]))
                    for more, found, leave_out in zip(extra, rows, banned)
                ]
            )  # found by the index already, or not to be shown
            rows, hidden = np.concatenate([rows, extra], 1), np.concatenate([hidden, hidden_extra | (extra == 0)], 1)
        scores = (self.table[torch.from_numpy(rows)].float() @ queries[:, :, None]).squeeze(-1)
        if self.successors is not None:
            scores += Successors.at(boosts, rows)
        return rows, scores.masked_fill(torch.from_numpy(hidden), float("-inf"))

    def recommend(
        self,
        history: Sequence[tuple[str, str]],
        k: int = 10,
        exclude: Iterable[str] = (),
        idle_seconds: float | None = None,
        seen: Iterable[str] | None = None,
    ) -> list[tuple[str, float]]:
        return self.recommend_batch([history], k, [exclude], [idle_seconds], None if seen is None else [seen])[0]
