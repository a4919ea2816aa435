"""Small metric helpers."""

from __future__ import annotations

import torch


def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1,)) -> list[float]:
    """Fraction of samples whose target is among the top-k predictions, for each k."""
    maxk = min(max(topk), output.shape[1])
    top = output.topk(maxk, dim=1).indices
    hits = top.eq(target[:, None])
    return [hits[:, : min(k, maxk)].any(dim=1).float().mean().item() for k in topk]


class ConfusionMatrix:
    """Accumulates counts[true, predicted]; per-class accuracy is the diagonal over row sums."""

    def __init__(self, num_classes: int) -> None:
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        num_classes = self.counts.shape[0]
        flat = target.cpu() * num_classes + predicted.cpu()
        self.counts += torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)

    def per_class_accuracy(self) -> list[float | None]:
        """None for a class with no samples."""
        totals = self.counts.sum(dim=1)
        return [(self.counts[i, i] / totals[i]).item() if totals[i] else None for i in range(len(totals))]
