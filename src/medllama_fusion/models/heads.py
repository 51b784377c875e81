"""Classification head over pooled text and image features."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ClassificationHead", "masked_mean"]


def masked_mean(hidden_states: Tensor, valid: Tensor | None) -> Tensor:
    """Mean over valid positions (no host sync, safe for empty rows).

    Args:
        hidden_states: ``[B, L, D]``.
        valid: ``[B, L]`` validity mask (1/True = real token) or ``None`` (all valid).

    Returns:
        ``[B, D]``; rows without any valid token are zero.
    """
    if valid is None:
        return hidden_states.mean(dim=1)
    weights = valid.to(hidden_states.dtype).unsqueeze(-1)
    # where() instead of multiply so non-finite values at padding cannot leak into the sum
    summed = hidden_states.where(weights > 0, 0.0).sum(dim=1)
    return summed / weights.sum(dim=1).clamp_min(1.0)


class ClassificationHead(nn.Module):
    """Per-modality ``Linear + Tanh`` → sum → ``Dropout`` → ``Linear(num_labels)``.

    Args:
        hidden_size: Feature size of both modalities.
        num_labels: Number of output logits.
        dropout: Dropout before the final layer.
    """

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
        self.text_proj = nn.Linear(hidden_size, hidden_size)
        self.image_proj = nn.Linear(hidden_size, hidden_size)
        self.act = nn.Tanh()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    @property
    def num_labels(self) -> int:
        """Number of outputs."""
        return int(self.classifier.out_features)

    def reset_classifier(self, num_labels: int) -> None:
        """Replace the last ``Linear`` with a fresh one with ``num_labels`` outputs."""
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_labels).to(
            device=old.weight.device, dtype=old.weight.dtype
        )

    def forward(
        self,
        text_features: Tensor | None,
        image_features: Tensor | None,
        text_keep: Tensor | None = None,
        image_keep: Tensor | None = None,
    ) -> Tensor:
        """Combine pooled features into logits.

        Args:
            text_features: ``[B, D]`` pooled text or ``None`` (missing modality).
            image_features: ``[B, D]`` pooled image or ``None``.
            text_keep: ``[B, 1]`` 1/0 per-sample presence of the text (modality dropout).
            image_keep: ``[B, 1]`` 1/0 per-sample presence of the image.

        Returns:
            ``[B, num_labels]`` logits.
        """
        combined: Tensor | None = None
        for features, proj, keep in (
            (text_features, self.text_proj, text_keep),
            (image_features, self.image_proj, image_keep),
        ):
            if features is None:
                continue
            part = self.act(proj(features.to(proj.weight.dtype)))
            if keep is not None:
                part = part.where(keep > 0, 0.0)  # where(): non-finite features cannot leak
            combined = part if combined is None else combined + part
        if combined is None:
            raise ValueError("ClassificationHead needs text_features or image_features.")
        return self.classifier(self.dropout(combined))  # type: ignore[no-any-return]
