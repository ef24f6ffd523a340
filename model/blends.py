"""What serving adds to the model's scores, fitted after training on the validation split: the
successor counts (model/successors.py), then EASE over the whole seen set (model/ease.py)."""

from __future__ import annotations

from dataclasses import dataclass

from model import ease
from model.data import SequenceData
from model.evaluate import Scorer
from model.successors import Successors, fit


@dataclass
class Blends:
    successors: Successors
    ease: ease.Ease | None  # None: the catalog is too large, or EASE did not help on validation
    tried: dict[str, list[dict]]  # per blend, every choice tried on validation with its figure

    def served(self, alone: Scorer) -> Scorer:
        """The model `alone` as served."""
        scorer = self.successors.blend(alone)
        return scorer if self.ease is None else self.ease.blend(scorer)

    def __str__(self) -> str:
        blend = f"successors: weight {self.successors.weight:g}, recent {self.successors.recent}"
        return blend + ("" if self.ease is None else f"; EASE: weight {self.ease.weight:g}, l2 {self.ease.l2:g}")

    def metrics(self) -> dict:
        """The choices and what was tried, for metrics.json."""
        return {
            "successors": {
                "weight": self.successors.weight,
                "recent": self.successors.recent,
                "tried": self.tried["successors"],
            },
            "ease": {
                "weight": self.ease.weight if self.ease else 0.0,
                "l2": self.ease.l2 if self.ease else None,
                "tried": self.tried["ease"],
            },
        }


def fit_blends(alone: Scorer, data: SequenceData) -> Blends:
    """Each blend chosen on validation in turn, after the model `alone`."""
    successors, successors_tried = fit(alone, data)
    chosen, ease_tried = ease.fit(successors.blend(alone), data)
    return Blends(successors, chosen, {"successors": successors_tried, "ease": ease_tried})
