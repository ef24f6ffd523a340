"""Pictures of a training run, saved beside each registered model."""

from __future__ import annotations

from pathlib import Path


def save_curve(history: list[dict], path: Path) -> None:
    """Training loss and validation NDCG@10 per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    ndcg_ax = loss_ax.twinx()
    ndcg_ax.plot(epochs, [h["val_ndcg@10"] for h in history], color="tab:orange", label="validation NDCG@10")
    ndcg_ax.set_ylabel("validation NDCG@10", color="tab:orange")
    fig.suptitle("rtrec training curve")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
