"""Classification heads: pool each modality's tokens, combine the modalities, score the labels.

Two heads share one interface (:meth:`pool` per modality, then ``forward`` on the pooled
features), chosen by ``FusionModel(pooling=...)``:

* :class:`ClassificationHead` (``"mean"``): masked mean over the valid tokens of each modality,
  per-modality ``Linear + Tanh``, sum, ``Dropout``, ``Linear(num_labels)``.
* :class:`LabelAttentionHead` (``"label_attention"``): one attention query per label over the
  valid tokens of each modality (label-wise attention as in LAAT, Vu et al. 2020, and PLM-ICD,
  Huang et al. 2022), so that each label reads its own words or patches; then the same
  per-modality ``Linear + Tanh``, sum and ``Dropout``, applied per label, and one score per
  label.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "ClassificationHead",
    "HeadPooling",
    "LabelAttention",
    "LabelAttentionHead",
    "Modality",
    "PerLabelLinear",
    "masked_mean",
]

#: How the head pools the tokens of a modality: masked mean, or one attention query per label.
HeadPooling = Literal["mean", "label_attention"]
#: The modality a head pools.
Modality = Literal["text", "image"]


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


def _sum_projected(
    branches: tuple[tuple[Tensor | None, nn.Linear, Tensor | None], ...],
    act: nn.Module,
    head: str,
) -> Tensor:
    """``act(proj(features))`` summed over the present modalities (the heads' combine step).

    Each branch is ``(features, proj, keep)``: ``features`` ``[B, D]`` or ``[B, C, D]`` (``None``
    for a missing modality), ``keep`` ``[B, 1]`` 1/0 per-sample presence (broadcast over the
    remaining dimensions) or ``None``.
    """
    combined: Tensor | None = None
    for features, proj, keep in branches:
        if features is None:
            continue
        part = act(proj(features.to(proj.weight.dtype)))
        if keep is not None:
            keep = keep.reshape(keep.shape[0], *([1] * (part.dim() - 1)))
            part = part.where(keep > 0, 0.0)  # where(): non-finite features cannot leak
        combined = part if combined is None else combined + part
    if combined is None:
        raise ValueError(f"{head} needs text_features or image_features.")
    return combined


def _check_num_labels(num_labels: int) -> None:
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}.")


class ClassificationHead(nn.Module):
    """Per-modality ``Linear + Tanh`` → sum → ``Dropout`` → ``Linear(num_labels)``.

    Pools each modality by the masked mean over its valid tokens (:meth:`pool`).

    Args:
        hidden_size: Feature size of both modalities.
        num_labels: Number of output logits.
        dropout: Dropout before the final layer.
    """

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        _check_num_labels(num_labels)
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
        _check_num_labels(num_labels)
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_labels).to(
            device=old.weight.device, dtype=old.weight.dtype
        )

    def pool(
        self, hidden_states: Tensor, valid: Tensor | None, modality: Modality
    ) -> tuple[Tensor, Tensor | None]:
        """Masked mean of one modality's final states.

        Args:
            hidden_states: ``[B, N, D]`` final (normalised) token or patch states.
            valid: ``[B, N]`` validity mask or ``None`` (all valid).
            modality: ``"text"`` or ``"image"`` (the same pooling for both).

        Returns:
            ``([B, D] pooled features, None)``: the mean head has no attention weights.
        """
        return masked_mean(hidden_states, valid), None

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
        combined = _sum_projected(
            (
                (text_features, self.text_proj, text_keep),
                (image_features, self.image_proj, image_keep),
            ),
            self.act,
            "ClassificationHead",
        )
        return self.classifier(self.dropout(combined))  # type: ignore[no-any-return]


class PerLabelLinear(nn.Module):
    """One linear score per label: ``logit[b, c] = weight[c] · x[b, c] + bias[c]``.

    Initialised like ``nn.Linear(in_features, 1)`` for each label.

    Args:
        in_features: Feature size ``D``.
        num_labels: Number of labels ``C``.
    """

    def __init__(self, in_features: int, num_labels: int) -> None:
        super().__init__()
        _check_num_labels(num_labels)
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(num_labels, in_features))
        self.bias = nn.Parameter(torch.empty(num_labels))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    @property
    def out_features(self) -> int:
        """Number of labels."""
        return int(self.weight.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, D]`` per-label features → ``[B, C]`` scores."""
        return (x * self.weight).sum(dim=-1) + self.bias


class LabelAttention(nn.Module):
    """Label-wise attention over the valid positions of one modality (LAAT).

    ``z = tanh(W h)`` (``W``: ``D → attention_size``, no bias), per label ``c`` the weights
    ``a_c = softmax over valid positions of (u_c · z)`` and the pooled feature
    ``v_c = Σ a_c h``.

    Args:
        hidden_size: Feature size ``D`` of the states.
        num_labels: Number of labels ``C`` (one query each).
        attention_size: Size of the projection ``z``.
    """

    def __init__(self, hidden_size: int, num_labels: int, attention_size: int = 256) -> None:
        super().__init__()
        _check_num_labels(num_labels)
        if attention_size < 1:
            raise ValueError(f"attention_size must be >= 1, got {attention_size}.")
        self.proj = nn.Linear(hidden_size, attention_size, bias=False)
        self.queries = nn.Linear(attention_size, num_labels, bias=False)

    @property
    def num_labels(self) -> int:
        """Number of queries."""
        return int(self.queries.out_features)

    def reset_queries(self, num_labels: int) -> None:
        """Replace the queries with ``num_labels`` fresh ones (the projection is kept)."""
        _check_num_labels(num_labels)
        old = self.queries
        self.queries = nn.Linear(old.in_features, num_labels, bias=False).to(
            device=old.weight.device, dtype=old.weight.dtype
        )

    def forward(self, hidden_states: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Attend per label.

        Args:
            hidden_states: ``[B, N, D]``.
            valid: ``[B, N]`` validity mask (1/True = real position) or ``None`` (all valid).

        Returns:
            ``([B, C, D] pooled features, [B, C, N] attention weights)``. Weights are exactly 0
            at invalid positions and sum to 1 over the valid ones; a row without any valid
            position has all-zero weights and features.
        """
        states = hidden_states.to(self.proj.weight.dtype)
        if valid is not None:
            # where(): non-finite values at padding cannot leak into scores or features
            states = states.where(valid[:, :, None].bool(), 0.0)
        scores = self.queries(torch.tanh(self.proj(states))).transpose(1, 2)  # [B, C, N]
        if valid is None:
            weights = scores.softmax(dim=-1)
        else:
            keep = valid[:, None, :].bool()
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1).where(keep, 0.0)
        return weights @ states.to(weights.dtype), weights


class LabelAttentionHead(nn.Module):
    """Label-wise attention pooling, then the mean head's combination applied per label.

    Per modality, :class:`LabelAttention` pools one feature ``v_c`` per label; per label,
    ``Linear + Tanh`` per modality → sum over the present modalities → ``Dropout`` → one score
    (:class:`PerLabelLinear`). The projections are shared by all labels; the attention queries
    and the scores are per label.

    Args:
        hidden_size: Feature size of both modalities.
        num_labels: Number of output logits.
        dropout: Dropout before the per-label scores.
        attention_size: Size of the attention projection ``z = tanh(W h)``.
    """

    def __init__(
        self, hidden_size: int, num_labels: int, dropout: float = 0.1, attention_size: int = 256
    ) -> None:
        super().__init__()
        _check_num_labels(num_labels)
        self.text_attention = LabelAttention(hidden_size, num_labels, attention_size)
        self.image_attention = LabelAttention(hidden_size, num_labels, attention_size)
        self.text_proj = nn.Linear(hidden_size, hidden_size)
        self.image_proj = nn.Linear(hidden_size, hidden_size)
        self.act = nn.Tanh()
        self.dropout = nn.Dropout(dropout)
        self.classifier = PerLabelLinear(hidden_size, num_labels)

    @property
    def num_labels(self) -> int:
        """Number of outputs."""
        return self.classifier.out_features

    @property
    def attention_size(self) -> int:
        """Size of the attention projection."""
        return int(self.text_attention.proj.out_features)

    def reset_classifier(self, num_labels: int) -> None:
        """Fresh label-specific parts for ``num_labels`` labels: attention queries and scores.

        The shared projections are kept.
        """
        _check_num_labels(num_labels)
        self.text_attention.reset_queries(num_labels)
        self.image_attention.reset_queries(num_labels)
        old = self.classifier
        self.classifier = PerLabelLinear(old.in_features, num_labels).to(
            device=old.weight.device, dtype=old.weight.dtype
        )

    def pool(
        self, hidden_states: Tensor, valid: Tensor | None, modality: Modality
    ) -> tuple[Tensor, Tensor | None]:
        """Label-wise attention pooling of one modality's final states.

        Args:
            hidden_states: ``[B, N, D]`` final (normalised) token or patch states.
            valid: ``[B, N]`` validity mask or ``None`` (all valid).
            modality: ``"text"`` or ``"image"`` (each has its own attention).

        Returns:
            ``([B, num_labels, D] per-label features, [B, num_labels, N] attention weights)``.
        """
        attention = self.text_attention if modality == "text" else self.image_attention
        return attention(hidden_states, valid)  # type: ignore[no-any-return]

    def forward(
        self,
        text_features: Tensor | None,
        image_features: Tensor | None,
        text_keep: Tensor | None = None,
        image_keep: Tensor | None = None,
    ) -> Tensor:
        """Combine per-label features into logits.

        Args:
            text_features: ``[B, C, D]`` per-label text features or ``None`` (missing modality).
            image_features: ``[B, C, D]`` per-label image features or ``None``.
            text_keep: ``[B, 1]`` 1/0 per-sample presence of the text (modality dropout).
            image_keep: ``[B, 1]`` 1/0 per-sample presence of the image.

        Returns:
            ``[B, num_labels]`` logits.
        """
        combined = _sum_projected(
            (
                (text_features, self.text_proj, text_keep),
                (image_features, self.image_proj, image_keep),
            ),
            self.act,
            "LabelAttentionHead",
        )
        return self.classifier(self.dropout(combined))  # type: ignore[no-any-return]
