"""Render attributions: a PNG heatmap overlay per image and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from medllama_fusion.extras import require

__all__ = ["heatmap", "render_html", "save_overlay"]


def heatmap(patches: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Upsample per-patch scores to an image-sized map (positive evidence only, max 1).

    Args:
        patches: ``[P]`` scores of one sample.
        grid: ``(rows, cols)`` of the patch grid.
        size: ``(H, W)`` of the image.

    Returns:
        ``float32 [H, W]`` in ``[0, 1]``.
    """
    values = patches.detach().float().cpu().clamp(min=0).reshape(1, 1, *grid)
    peak = float(values.max())
    if peak > 0:
        values = values / peak
    up = torch.nn.functional.interpolate(values, size=size, mode="nearest")
    return up[0, 0].numpy()  # type: ignore[no-any-return]


def save_overlay(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    probabilities: Mapping[str, float],
    path: str | Path,
    title: str = "",
    attention: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write the image and one heatmap overlay per explained label side by side (PNG).

    Args:
        image: ``[H, W]`` grayscale image (any range; min-max scaled for display).
        maps: Label → ``[H, W]`` heatmap in ``[0, 1]`` (Integrated Gradients, first row).
        probabilities: Label → probability (shown in the panel titles).
        path: Output PNG.
        title: Figure title (e.g. the sample id).
        attention: Label → ``[H, W]`` label-attention map in ``[0, 1]``; when given, a second
            row shows them under the first.

    Returns:
        ``path``.

    Raises:
        InputError: Without the ``explain`` extra (matplotlib).
    """
    require("explain", "attribution overlays")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("Integrated Gradients", "inferno", maps)]
    if attention:
        rows.append(("label attention", "viridis", attention))
    panels = 1 + max(len(row[2]) for row in rows)
    fig, axes = plt.subplots(
        len(rows), panels, figsize=(2.6 * panels, 2.9 * len(rows)), squeeze=False
    )
    shown = (image - image.min()) / max(float(image.max() - image.min()), 1e-8)
    for r, (kind, cmap, row_maps) in enumerate(rows):
        axes[r, 0].imshow(shown, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title("image" if len(rows) == 1 else f"image ({kind} →)", fontsize=8)
        for ax, (label, values) in zip(axes[r, 1:], row_maps.items(), strict=False):
            ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
            ax.imshow(values, cmap=cmap, alpha=0.55 * (values > 0.05), vmin=0, vmax=1)
            ax.set_title(f"{label} p={probabilities.get(label, float('nan')):.2f}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _token_spans(
    tokens: Sequence[str], scores: Sequence[float], positive: str = "220,40,40"
) -> str:
    peak = max((abs(s) for s in scores), default=0.0) or 1.0
    spans = []
    for token, score in zip(tokens, scores, strict=True):
        alpha = min(1.0, abs(score) / peak)
        colour = positive if score >= 0 else "40,90,220"
        spans.append(
            f'<span title="{score:+.4f}" style="background:rgba({colour},{alpha:.2f})">'
            f"{html.escape(token)}</span>"
        )
    return " ".join(spans)


def render_html(
    sample_id: str,
    probabilities: Mapping[str, float],
    token_scores: Mapping[str, tuple[Sequence[str], Sequence[float]]],
    overlay_png: str | Path | None,
    path: str | Path,
    decisions: Mapping[str, int] | None = None,
    token_attention: Mapping[str, tuple[Sequence[str], Sequence[float]]] | None = None,
) -> Path:
    """Write one self-contained HTML page for a sample (the overlay PNG embedded).

    Args:
        sample_id: Sample id.
        probabilities: Label → probability (all labels).
        token_scores: Explained label → ``(tokens, scores)``; red supports the label, blue
            speaks against it.
        overlay_png: PNG from :func:`save_overlay` to embed, or ``None``.
        path: Output HTML file.
        decisions: Optional label → 0/1 at the stored thresholds.
        token_attention: Optional label → ``(tokens, weights)`` of a label-attention head,
            shown (green, scaled to the label's largest weight) under the label's scores.

    Returns:
        ``path``.
    """
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td>"
        + (f"<td>{decisions[k]}</td>" if decisions else "")
        + "</tr>"
        for k, v in sorted(probabilities.items(), key=lambda kv: -kv[1])
    )
    head = (
        "<tr><th>label</th><th>probability</th>"
        + ("<th>decision</th>" if decisions else "")
        + "</tr>"
    )
    attention = dict(token_attention or {})
    texts = ""
    for label, (tokens, scores) in token_scores.items():
        texts += (
            f"<h3>{html.escape(label)}</h3><p class='tokens'>{_token_spans(tokens, scores)}</p>"
        )
        if label in attention:
            texts += (
                "<p class='caption'>label attention (where this label's pooling looks; hover a "
                "token for its weight)</p><p class='tokens attention'>"
                f"{_token_spans(*attention[label], positive='30,160,70')}</p>"
            )
    image = ""
    if overlay_png is not None:
        data = base64.b64encode(Path(overlay_png).read_bytes()).decode("ascii")
        image = f"<img alt='attribution overlay' src='data:image/png;base64,{data}'>"
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(sample_id)}</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:1em auto}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        ".tokens{line-height:1.9}.tokens span{padding:1px 2px;border-radius:3px}"
        ".caption{font-size:85%;color:#555;margin-bottom:0}"
        "</style></head><body>"
        f"<h1>{html.escape(sample_id)}</h1>{image}"
        "<h2>Report tokens (Integrated Gradients; red supports the label, blue opposes"
        f"{'; green: label attention' if attention else ''})</h2>"
        f"{texts}<h2>Probabilities</h2><table>{head}{rows}</table></body></html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
