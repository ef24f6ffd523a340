"""The state of a training run, saved after every epoch so that an interrupted run resumes exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.sasrec import SASRec


@dataclass
class TrainState:
    """Everything an epoch changes. The global torch RNG (dropout, sampled negatives) is part of it:
    it is saved with the rest and restored on resume."""

    model: SASRec
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the order of the batches
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)  # the history record of the best validation epoch
    best_state: dict[str, torch.Tensor] | None = None  # that epoch's weights
    epoch: int = -1  # the last finished epoch
    stale: int = 0  # epochs since the best one
    finished: bool = False  # stopped early or by the time budget: a resumed run trains no further
    fingerprint: str = ""  # the data and settings the run trains on: a checkpoint of others is not resumed

    def save(self, path: Path) -> None:
        """Write through a temporary file, so a crash mid-write keeps the previous checkpoint."""
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "best": self.best,
            "best_state": self.best_state,
            "epoch": self.epoch,
            "stale": self.stale,
            "finished": self.finished,
            "fingerprint": self.fingerprint,
        }
        torch.save(state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    def resume(self, path: Path) -> bool:
        """Continue from the checkpoint at `path` if it is of this run's data and settings (its
        fingerprint): False, and nothing loaded, when it is not (a run left over from other data,
        or from before a change of settings or of the model)."""
        # on the CPU: the RNG states must stay CPU byte tensors, and load_state_dict copies the
        # weights and optimizer moments to wherever the model lives
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("fingerprint") != self.fingerprint:
            return False
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        self.history, self.best, self.best_state = saved["history"], saved["best"], saved["best_state"]
        self.epoch, self.stale, self.finished = saved["epoch"], saved["stale"], saved["finished"]
        return True
