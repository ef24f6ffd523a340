"""A causal self-attention sequential recommender (SASRec family).

Input tokens add an item representation (its id, category and price-bucket embeddings, and with
`content` a projection of its text embedding), the
event type of the interaction and a position counted from the newest token. Pre-LayerNorm blocks
with causal attention; padding is on the left and never attended to. Scores are dot products
with the same item representations, so side features also reach items seen rarely.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.data import GAP_BUCKETS, PRICE_BUCKETS, Vocabulary
from rtrec.content import CONTENT_DIM
from rtrec.events import EVENT_TYPES


@dataclass(frozen=True)
class ModelConfig:
    max_len: int = 50
    dim: int = 64
    layers: int = 2
    heads: int = 2
    ff_mult: int = 4
    dropout: float = 0.2
    side_features: bool = True
    event_types: bool = True
    next_gap: bool = True  # condition the prediction on the time until the next interaction
    # add each item's text embedding (rtrec/content.py), projected, to its representation: an item
    # never trained on is then scored from its text, category and price
    content: bool = False
    id_dropout: float = 0.0  # share of items whose id embedding a training batch leaves out (learns to use the rest)

    def to_dict(self) -> dict:
        return asdict(self)


class Dropout(nn.Module):
    """nn.Dropout with its mask drawn on CPU as 15-bit integers. There torch's own dropout draws a
    Bernoulli per element and took a third of a training step; this one, forward and backward,
    takes less than half its time (an epoch on MovieLens: 3.1 -> 2.6 s), and the share dropped is
    `p` to within 1/65,536. On a GPU torch's fused kernel is used as it is."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if not x.is_cpu:
            return F.dropout(x, self.p, training=True)
        keep = torch.empty_like(x, dtype=torch.int16).random_() >= round(self.p * 32_768)  # random_: [0, 32,767]
        return x * keep.to(x.dtype).mul_(1 / (1 - self.p))  # the mask scaled in place: one product with x


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.ff = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ff_mult * cfg.dim),
            nn.GELU(),
            Dropout(cfg.dropout),
            nn.Linear(cfg.ff_mult * cfg.dim, cfg.dim),
        )
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, newest_only: bool = False) -> torch.Tensor:
        """[B, N, D] -> [B, N, D]; with `newest_only`, [B, 1, D]: the newest position's state alone
        (its query still attends to every key), all that scoring the next item needs of the last block."""
        width = x.shape[-1] // self.heads  # [B, N, D]; no other sizes read: each would be an operator in the ONNX graph
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, self.heads, width)).permute(2, 0, 3, 1, 4)
        if newest_only:
            q, allowed, x = q[:, :, -1:], allowed[:, :, -1:], x[:, -1:]
        if torch.onnx.is_in_onnx_export():  # the same product in plain operators: a smaller, faster graph
            weights = (q * width**-0.5) @ k.transpose(-1, -2)  # [B, H, N, N]
            attn = weights.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
        else:  # no dropout on the [B, H, N, N] attention weights: on CPU drawing that mask costs a third of a step
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # [B, H, N, D/H]
        x = x + self.drop(self.proj(attn.transpose(1, 2).flatten(2)))
        return x + self.drop(self.ff(self.norm2(x)))


class SASRec(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        n_items: int,
        n_categories: int,
        item_category: list[int],
        item_price_bucket: list[int],
        n_event_types: int,
        n_price_buckets: int,
        n_gap_buckets: int,
        item_content: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.item = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.category = nn.Embedding(n_categories + 1, cfg.dim, padding_idx=0)
        self.price = nn.Embedding(n_price_buckets + 1, cfg.dim, padding_idx=0)
        self.event = nn.Embedding(n_event_types + 1, cfg.dim, padding_idx=0)
        self.position = nn.Embedding(cfg.max_len + 1, cfg.dim, padding_idx=0)
        self.gap = nn.Embedding(n_gap_buckets + 1, cfg.dim, padding_idx=0)
        self.register_buffer("item_category", torch.tensor(item_category, dtype=torch.long), persistent=False)
        self.register_buffer("item_price_bucket", torch.tensor(item_price_bucket, dtype=torch.long), persistent=False)
        if cfg.content:
            # saved with the weights: serving scores with the vectors the model was trained with
            content = torch.zeros(n_items + 1, CONTENT_DIM) if item_content is None else item_content.float()
            self.register_buffer("item_content", content)
            self.content = nn.Linear(CONTENT_DIM, cfg.dim, bias=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.drop = Dropout(cfg.dropout)
        torch._assert(len(item_category) == n_items + 1, "item_category covers padding + every item")
        nn.init.normal_(self.item.weight, std=cfg.dim**-0.5)
        for emb in (self.category, self.price, self.event, self.position, self.gap):
            nn.init.normal_(emb.weight, std=0.02)
            with torch.no_grad():
                emb.weight[0].zero_()

    @classmethod
    def from_vocab(cls, cfg: ModelConfig, vocab: Vocabulary, content: np.ndarray | None = None) -> SASRec:
        """The model for a vocabulary: what training builds and what loading a saved version rebuilds.
        `content`: [V + 1, CONTENT_DIM] text embeddings of the items (zeros where none), with `cfg.content`."""
        return cls(
            cfg,
            vocab.n_items,
            len(vocab.categories),
            vocab.item_category,
            vocab.item_price_bucket,
            n_event_types=len(EVENT_TYPES),
            n_price_buckets=PRICE_BUCKETS,
            n_gap_buckets=GAP_BUCKETS,
            item_content=None if content is None else torch.from_numpy(content),
        )

    def item_table(self) -> torch.Tensor:
        """[V + 1, D] representation of every item, row 0 padding."""
        table = self.item.weight
        if self.training and self.cfg.id_dropout > 0:
            table = table * (torch.rand(table.shape[0], 1, device=table.device) >= self.cfg.id_dropout)
        if self.cfg.side_features:
            table = table + self.category(self.item_category) + self.price(self.item_price_bucket)
        if self.cfg.content:
            table = table + self.content(self.item_content)
        return table

    def new_item_rows(self, categories: torch.Tensor, prices: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """[N, D] representations of items the model was never trained on: no id embedding, only
        their category index, price bucket and text embedding."""
        rows = torch.zeros(len(categories), self.cfg.dim, device=self.item.weight.device)
        if self.cfg.side_features:
            rows = rows + self.category(categories) + self.price(prices)
        if self.cfg.content:
            rows = rows + self.content(content)
        return rows

    def encode(
        self, items: torch.Tensor, events: torch.Tensor, table: torch.Tensor | None = None, newest_only: bool = False
    ) -> torch.Tensor:
        """items, events: [B, N] left-padded. Returns [B, N, D] states; state t has seen tokens <= t.
        With `newest_only`, [B, 1, D]: the newest state alone, the last block's attention output and
        feed-forward computed for it only (what scoring the next item needs: the serving path)."""
        n = items.shape[1]
        table = self.item_table() if table is None else table
        real = items > 0  # [B, N]
        # position 1 is the newest token: recency means the same at every sequence length
        position = real.long().flip(1).cumsum(1).flip(1) * real  # [B, N]
        rows = table[items]
        if rows.dtype == torch.float16:  # an index's compressed table (a no-op cast would enter the ONNX graph)
            rows = rows.float()
        x = rows * math.sqrt(self.cfg.dim) + self.position(position)
        if self.cfg.event_types:
            x = x + self.event(events)
        x = self.drop(x * real.unsqueeze(-1))
        # a token attends to earlier real tokens and always to itself (so padding rows stay finite);
        # built from comparisons, which every ONNX runtime implements for booleans
        step = torch.arange(n, device=items.device)
        allowed = ((step[:, None] >= step[None, :]) & real[:, None, :]) | (step[:, None] == step[None, :])
        allowed = allowed.unsqueeze(1)  # [B, 1, N, N]
        for depth, block in enumerate(self.blocks, 1):
            x = block(x, allowed, newest_only and depth == len(self.blocks))
        return self.norm(x)

    def query(self, states: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """The states that score the next item, given the time bucket until it (0: unknown)."""
        return states + self.gap(gaps) if self.cfg.next_gap else states

    def scores(
        self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, table: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, V + 1] scores of every item as the next one after each sequence (column 0 is padding);
        gaps [B]: bucket of the time from the last item to the moment of the request."""
        table = self.item_table() if table is None else table
        return self.next_query(items, events, gaps, table) @ table.T

    def next_query(
        self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, table: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, D]: the vector each history's next item is scored with (its product with the item's row)."""
        return self.query(self.encode(items, events, table, newest_only=True)[:, -1], gaps)

    def loss(
        self, items: torch.Tensor, events: torch.Tensor, targets: torch.Tensor, gaps: torch.Tensor, negatives: int = 0
    ) -> torch.Tensor:
        """Cross-entropy of the next item at every position (targets [B, N], 0 where none; gaps [B, N]
        the time bucket from each position to its target).

        negatives = 0: softmax over the whole catalog. Otherwise a sampled softmax over the positive
        and `negatives` uniformly drawn items shared by the batch, accidental hits masked."""
        table = self.item_table()
        states = self.encode(items, events, table)
        keep = targets > 0
        h, y = self.query(states[keep], gaps[keep]), targets[keep]  # [T, D], [T]
        if negatives <= 0:
            logits = h @ table.T  # [T, V + 1]
            logits[:, 0] = float("-inf")
            return F.cross_entropy(logits, y)
        sampled = torch.randint(1, table.shape[0], (negatives,), device=h.device)  # [K]
        pos = (h * table[y]).sum(-1, keepdim=True)  # [T, 1]
        neg = h @ table[sampled].T  # [T, K]
        neg = neg.masked_fill(sampled[None, :] == y[:, None], float("-inf"))
        logits = torch.cat([pos, neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=h.device))
