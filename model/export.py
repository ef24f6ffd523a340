"""The compressed inference form of a model: its scoring (`SASRec.scores`) exported to ONNX with
the item table in int8, run by ONNX Runtime.

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

What is exported: the encoder in float32 (its attention in plain operators, `Block.forward`, and
saved with ONNX Runtime's basic optimizations: 112 operators against 131, about 6% faster), and the
product with the item table in int8 (`append_int8_scores`): each user's query rounded to
QUERY_STEPS steps of its own scale and each item's row to TABLE_STEPS of its own, so no user's
scores depend on the batch. At 10k items the float product is a third of the graph's time, and
the int8 table is a quarter of the float one's memory traffic. Measured the same hour
(`median_ms`'s turns of 20 requests; in turns of one request in brackets, where each form finds
the caches the other one left):

| model | PyTorch float32 | ONNX float32 (before) | ONNX, int8 product (now; table on 127 steps) |
|---|---|---|---|
| 10k items, random weights | 0.73-0.78 ms | 0.43-0.45 (1.68-1.72x; 1.55-1.58x) | 0.38-0.40 (1.96-2.06x; 1.67-1.70x) |
| MovieLens-100k, `cpu` | 0.47-0.57 ms | 0.22-0.27 (2.15-2.21x; 1.79-1.87x) | 0.22-0.24 (2.24-2.36x; 1.82-1.89x) |

With the table on TABLE_STEPS (63), an hour later: 10k items 2.03x twice (1.58-1.60x), MovieLens
2.14-2.23x (1.79-1.81x). The figures in turns of one request come from `median_ms(..., turn=1)`.

Test NDCG@10 on MovieLens-100k after `rtrec train` with the defaults, both forms as served: 0.1343
in int8 against 0.1341 in float32 (nothing lost). The item table is an input, not a constant of
the graph: it holds the rows serving adds for items the model never trained on
(model/inference.py); a `Recommender` makes its int8 form with the table (`OnnxScores.for_table`).

`compression_check` is what training runs before registering: the exported form must reach the
float model's test NDCG@10 within `MAX_NDCG_LOSS` (relative) and take less model time per request;
the result goes into the version's metrics (``compressed``), and serving loads the ONNX form only
for a version whose check passed. A catalog served from an index (model/ann.py) is never scored
whole, so its compressed form is the index's half-precision table and index instead, held to the
same check on the served path.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from model.sasrec import SASRec

if TYPE_CHECKING:
    import onnx

ONNX_FILE = "scores.onnx"
MAX_NDCG_LOSS = 0.01  # relative: the compressed form may lose at most 1% of the float model's test NDCG@10
OPSET = 17
TURN = 20  # requests a form serves in a row when forms are timed side by side (`median_ms`)
QUERY_STEPS = 127  # a query's largest magnitude maps to this many steps of its scale (uint8 around ZERO_POINT)
ZERO_POINT = 128
# an item row's: ONNX Runtime's uint8 x int8 kernels on x86 without VNNI (AVX2, AVX-512 before
# Cascade Lake) add pairs of products in int16, which 255 * 127 * 2 overflows and 255 * 63 * 2 does not
TABLE_STEPS = 63


class QueryGraph(nn.Module):
    """`SASRec.next_query` with the item table as an input: the float part of the exported graph."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, table: torch.Tensor):
        return self.model.next_query(items, events, gaps, table)


def export_onnx(model: SASRec, path: Path) -> None:
    """Write the model's scoring as ONNX: inputs items, events [B, N] int64, gaps [B] int64, table
    [V, D] float32 (the rows a history's items are read from) and the table's int8 form,
    table_int8 [D, V] and table_scale [V] (`quantize_rows`); output scores [B, V]. Batch, length and
    catalog size are dynamic. The graph is saved with ONNX Runtime's basic optimizations applied."""
    model = model.eval().cpu()
    items, buffer = torch.ones(2, 3, dtype=torch.long), io.BytesIO()
    args = (items, items, torch.ones(2, dtype=torch.long), model.item_table().detach())
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notice that a newer one exists
        torch.onnx.export(
            QueryGraph(model).eval(),  # the exporter puts the wrapper back in its mode, and the model with it
            args,
            buffer,
            input_names=["items", "events", "gaps", "table"],
            output_names=["query"],
            dynamic_axes={
                "items": {0: "batch", 1: "length"},
                "events": {0: "batch", 1: "length"},
                "gaps": {0: "batch"},
                "table": {0: "catalog"},
                "query": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    import onnx  # (both imported here: serving, which only runs the graph, does not need the first)
    import onnxruntime

    graph = onnx.load_from_string(buffer.getvalue())
    append_int8_scores(graph.graph, model.cfg.dim)

    options = onnxruntime.SessionOptions()  # saved after constant folding and the other portable rewrites
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path)
    onnxruntime.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def append_int8_scores(graph: onnx.GraphProto, dim: int) -> None:
    """Score the graph's `query` [B, D] against the int8 table: the query is quantized per user
    (its own largest magnitude maps to QUERY_STEPS), so a user's scores do not depend on who else is
    in the batch; the integer product is scaled back by the user's and each item's scale."""
    import onnx

    graph.output.pop()  # the query
    graph.input.extend(
        [
            onnx.helper.make_tensor_value_info("table_int8", onnx.TensorProto.INT8, [dim, "catalog"]),
            onnx.helper.make_tensor_value_info("table_scale", onnx.TensorProto.FLOAT, ["catalog"]),
        ]
    )
    constants = {
        "q_steps": np.float32(QUERY_STEPS),
        "q_tiny": np.float32(1e-30),
        "q_offset": np.float32(ZERO_POINT),
        "q_zero": np.uint8(ZERO_POINT),
    }
    graph.initializer.extend(onnx.numpy_helper.from_array(np.array(v), k) for k, v in constants.items())
    node = onnx.helper.make_node
    graph.node.extend(
        [
            node("Abs", ["query"], ["q_abs"]),
            node("ReduceMax", ["q_abs"], ["q_max"], axes=[1], keepdims=1),  # [B, 1] (axes: an attribute to opset 17)
            node("Div", ["q_max", "q_steps"], ["q_scale_0"]),
            node("Max", ["q_scale_0", "q_tiny"], ["q_scale"]),  # an all-zero query stays finite
            node("Div", ["query", "q_scale"], ["q_steps_of"]),
            node("Round", ["q_steps_of"], ["q_round"]),
            # uint8 around a zero point: ONNX Runtime's integer products are fastest for uint8 x int8
            node("Add", ["q_round", "q_offset"], ["q_shifted"]),
            node("Cast", ["q_shifted"], ["q_uint8"], to=onnx.TensorProto.UINT8),
            node("MatMulInteger", ["q_uint8", "table_int8", "q_zero"], ["products"]),  # [B, V] int32
            node("Cast", ["products"], ["products_float"], to=onnx.TensorProto.FLOAT),
            node("Mul", ["products_float", "q_scale"], ["scaled"]),
            node("Mul", ["scaled", "table_scale"], ["scores"]),
        ]
    )
    graph.output.append(onnx.helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["batch", "catalog"]))


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A [V, D] float table as int8 with one scale per row (its largest magnitude maps to
    TABLE_STEPS): ([D, V] int8, the layout the graph multiplies with; [V] float32 scales)."""
    scale = np.abs(table).max(axis=1) / TABLE_STEPS
    scale[scale == 0] = 1.0  # a row of zeros: an item with no category, price or text
    steps = np.clip(np.rint(table / scale[:, None]), -TABLE_STEPS, TABLE_STEPS)
    return np.ascontiguousarray(steps.astype(np.int8).T), scale.astype(np.float32)


class OnnxScores:
    """The exported scoring in an ONNX Runtime session on one thread (as each serving worker runs
    torch): called like `SASRec.scores`, with tensors in and a tensor out. It keeps the int8 form of
    the last table it was given; `for_table` makes it ahead, for a table of its own."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.quantized: tuple[torch.Tensor, np.ndarray, np.ndarray] | None = None  # (table, its int8 form, scales)

    def for_table(self, table: torch.Tensor) -> OnnxScores:
        """This graph (the same session) with `table`'s int8 form made now: what a `Recommender`
        holds, so that no request pays for it and two tables never take turns in one cache."""
        bound = copy.copy(self)
        bound.quantized = (table, *quantize_rows(table.numpy()))
        return bound

    def __call__(self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, table: torch.Tensor):
        quantized = self.quantized
        if quantized is None or quantized[0] is not table:
            quantized = self.quantized = self.for_table(table).quantized
        feed = {
            "items": items.numpy(),
            "events": events.numpy(),
            "gaps": gaps.numpy(),
            "table": table.numpy(),
            "table_int8": quantized[1],
            "table_scale": quantized[2],
        }
        return torch.from_numpy(self.session.run(None, feed)[0])


def median_ms(forms: Sequence[Callable[[int], object]], requests: int, turn: int = TURN) -> list[float]:
    """Median time (ms) of one request in each of `forms` (called with the request's number), on
    one torch thread as a serving worker runs. The forms take turns of `turn` requests, so a change
    in the machine's load falls on all of them, and each runs on the caches it has warmed: a serving
    worker runs one form (though with its HTTP and feature-store work between model calls). Timed
    in turns of one request, a form pays for the caches the other one used: about 0.09 ms for the
    ONNX graph of a MovieLens model."""
    times, threads = [[] for _ in forms], torch.get_num_threads()
    torch.set_num_threads(1)  # (ONNX Runtime runs one thread too)
    try:
        with torch.inference_mode():
            for first in range(0, requests, turn):
                for form, spent in zip(forms, times):
                    for request in range(first, min(first + turn, requests)):
                        start = time.perf_counter()
                        form(request)
                        spent.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    warm = min(turn, requests // 2)  # the first turn (at most half the requests) warms up
    return [1000 * statistics.median(spent[warm:]) for spent in times]


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
