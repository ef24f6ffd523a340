"""The compressed inference form of a model: its scoring (`SASRec.scores`) exported to ONNX, run
by ONNX Runtime.

A request's model time is the encoder (history -> query vector, two attention blocks), one product
with the item table, and a top-k. At one user per call, PyTorch eager spends most of the encoder's
time dispatching ~40 small operators; ONNX Runtime runs the same graph, fused, in less than half of it.
Chosen by measurement on a 10k-item model, one thread, one user, 50 items of history:

| form | measured |
|---|---|
| PyTorch float32 | encoder 0.72 ms; whole call (encoder, scores, top-k) 1.08 ms |
| PyTorch, int8 dynamic quantization of the Linear layers | whole call 1.26 ms: slower, the layers are 64 wide |
| ONNX Runtime float32 | encoder 0.33 ms |
| ONNX Runtime, int8 weights | encoder 0.30 ms, at 1% relative error in the query vector |

Measured again later (`model_ms`, the forms taking turns; scores and top-10), on a MovieLens-100k
model: PyTorch 0.63 ms, ONNX float32 0.34 ms (1.85x), ONNX with dynamic int8 quantization (per
channel, pre-processed) 0.26 ms (2.4x) at no loss of test NDCG@10 (0.1039 against 0.1036); on 10k
items 0.77 / 0.49 / 0.42 ms. Not used: dynamic quantization computes the activations' scale per
call, over the whole batch, so a user's scores change (by ~0.4%) with whoever else is in a
micro-batch, and the top-k with them. Static int8 (scales fixed by calibration) answers the same
in any batch but lost 7% of test NDCG@10 and was no faster than the float32 graph.

The float32 graph gives the PyTorch model's scores (to 1e-6), so it is the one exported.
The item table is an input, not a constant of the graph: it holds the rows serving adds for items
the model never trained on (model/inference.py), and one copy of it serves both forms.

`compression_check` is what training runs before registering: the exported form must reach the
float model's test NDCG@10 within `MAX_NDCG_LOSS` (relative) and take less model time per request;
the result goes into the version's metrics (``compressed``), and serving loads the ONNX form only
for a version whose check passed. A catalog served from an index (model/ann.py) is never scored
whole, so its compressed form is the index's half-precision table and index instead, held to the
same check on the served path.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.sasrec import SASRec

ONNX_FILE = "scores.onnx"
MAX_NDCG_LOSS = 0.01  # relative: the compressed form may lose at most 1% of the float model's test NDCG@10
OPSET = 17


class ScoreGraph(nn.Module):
    """`SASRec.scores` with the item table as an input: what the exported graph computes."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, table: torch.Tensor):
        return self.model.scores(items, events, gaps, table)


def export_onnx(model: SASRec, path: Path) -> None:
    """Write the model's scoring as ONNX: inputs items, events [B, N] int64, gaps [B] int64, table
    [V, D] float32; output scores [B, V]. Batch, length and catalog size are dynamic."""
    model = model.eval().cpu()
    items = torch.ones(2, 3, dtype=torch.long)
    args = (items, items, torch.ones(2, dtype=torch.long), model.item_table().detach())
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notice that a newer one exists
        torch.onnx.export(
            ScoreGraph(model).eval(),  # the exporter puts the wrapper back in its mode, and the model with it
            args,
            str(path),
            input_names=["items", "events", "gaps", "table"],
            output_names=["scores"],
            dynamic_axes={
                "items": {0: "batch", 1: "length"},
                "events": {0: "batch", 1: "length"},
                "gaps": {0: "batch"},
                "table": {0: "catalog"},
                "scores": {0: "batch", 1: "catalog"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


class OnnxScores:
    """The exported scoring in an ONNX Runtime session on one thread (as each serving worker runs
    torch): called like `SASRec.scores`, with tensors in and a tensor out."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, table: torch.Tensor):
        feed = {"items": items.numpy(), "events": events.numpy(), "gaps": gaps.numpy(), "table": table.numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])


def median_ms(forms: Sequence[Callable[[int], object]], requests: int) -> list[float]:
    """Median time (ms) of one request in each of `forms` (called with the request's number), on
    one torch thread as a serving worker runs; the forms take turns on each request, so a change in
    the machine's load falls on all of them."""
    times, threads = [[] for _ in forms], torch.get_num_threads()
    torch.set_num_threads(1)  # (ONNX Runtime runs one thread too)
    try:
        with torch.inference_mode():
            for request in range(requests):
                for form, spent in zip(forms, times):
                    start = time.perf_counter()
                    form(request)
                    spent.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return [1000 * statistics.median(spent[requests // 10 :]) for spent in times]  # the first warm caches up


def model_ms(forms: Sequence, model: SASRec, histories: int = 200, length: int = 50, seed: int = 0) -> list[float]:
    """Median model time of one request (one user, `length` items of history, at most the model's
    max_len) in each of `forms` (each called like `SASRec.scores`), the top-10 taken."""
    table, length = model.item_table().detach(), min(length, model.cfg.max_len)
    items = torch.from_numpy(np.random.default_rng(seed).integers(1, len(table), (histories, 1, length)))
    gaps = torch.ones(1, dtype=torch.long)
    return median_ms(
        [
            lambda n, scores=scores: scores(items[n], torch.ones_like(items[n]), gaps, table).topk(10)
            for scores in forms
        ],
        histories,
    )


def compression_check(
    float_ndcg: float,
    compressed_ndcg: float,
    float_ms: float,
    compressed_ms: float,
    form: str = "onnx",
    file: str = ONNX_FILE,
    slower_allowed: float = 0.0,
) -> dict:
    """What the registry keeps about the compressed form (`form`, in `file`), and whether serving may
    use it: at most MAX_NDCG_LOSS lost, and faster (or at most `slower_allowed` slower, relative)."""
    loss = (float_ndcg - compressed_ndcg) / float_ndcg if float_ndcg > 0 else 0.0
    return {
        "format": form,
        "file": file,
        "test_ndcg@10": compressed_ndcg,
        "float_test_ndcg@10": float_ndcg,
        "relative_ndcg_loss": loss,
        "model_ms": compressed_ms,
        "float_model_ms": float_ms,
        "speedup": float_ms / compressed_ms if compressed_ms > 0 else 0.0,
        "passed": loss <= MAX_NDCG_LOSS and compressed_ms < float_ms * (1 + slower_allowed),
    }
