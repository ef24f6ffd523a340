"""Training examples: every user's training interactions cut into windows, and batches of them."""

from __future__ import annotations

import numpy as np
import torch

from model.data import HOLDOUT_OFFSETS, SequenceData, gap_bucket, pad_left


def training_windows(
    data: SequenceData, max_len: int, all_windows: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, event types, targets, gap buckets), each [W, max_len]: every user's training
    sequence shifted by one (position t predicts item t + 1, knowing the time until it), cut from
    the end into windows of max_len, each starting half a window before the one after it, so that
    every training interaction is a target once. A window's older half is left to the window
    before it (targets 0), where it is the newer half: a target is then predicted with at least
    half a window of history in view wherever the user has that much, not with none at a window's
    start. Validation and test targets are never included."""
    stride = max(1, max_len // 2)
    seqs, kinds, nexts, gaps = [], [], [], []
    for items, events, times, held in zip(data.items, data.events, data.times, data.has_holdout):
        # a held-out user's training part stops before the validation target, the earlier of the two
        end = len(items) - HOLDOUT_OFFSETS["validation"] if held else len(items)
        for stop in range(end, 1, -stride):
            start = max(0, stop - max_len - 1)
            targets = items[start + 1 : stop]
            if start > 0 and all_windows:  # the older targets are the next window's newer ones
                targets = np.concatenate([np.zeros(max_len - stride, targets.dtype), targets[max_len - stride :]])
            seqs.append(items[start : stop - 1])
            kinds.append(events[start : stop - 1])
            nexts.append(targets)
            gaps.append(gap_bucket(np.diff(times[start:stop])))
            if start == 0 or not all_windows:
                break
    return tuple(pad_left(x, max_len) for x in (seqs, kinds, nexts, gaps))


def length_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Batches of sequences of similar length (less padding), in random order, shuffled within ties."""
    noise = torch.rand(len(lengths), generator=generator)
    order = torch.argsort(lengths.double() + noise)
    batches = list(order.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]
