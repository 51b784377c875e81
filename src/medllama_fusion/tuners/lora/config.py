"""LoRA settings (rank, scaling, dropout, targets) and the paper's fixed-budget presets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

__all__ = ["LORA_TARGET_MODULES", "LoraSettings", "LoraTarget", "PaperBudgetRank"]

#: Linear sub-module of a LLaMA-style block that LoRA may adapt.
LoraTarget = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: Rank of one of the paper's fixed-budget LoRA settings (:meth:`LoraSettings.paper_budget`).
PaperBudgetRank = Literal[2, 4, 8]

#: Linear sub-modules of a LLaMA-style block that LoRA may adapt (the values of ``LoraTarget``).
LORA_TARGET_MODULES: tuple[str, ...] = get_args(LoraTarget)

# rank x number of adapted projection types = 8 for every paper setting
_PAPER_BUDGET: dict[PaperBudgetRank, tuple[LoraTarget, ...]] = {
    8: ("q_proj",),
    4: ("q_proj", "v_proj"),
    2: ("q_proj", "k_proj", "v_proj", "o_proj"),
}


def _default_targets() -> list[LoraTarget]:
    return ["q_proj", "k_proj", "v_proj", "o_proj"]


def _check_target_modules(target_modules: Iterable[str], name: str = "target_modules") -> None:
    """Raise a ``ValueError`` naming the allowed values for any unknown target module.

    Args:
        target_modules: The given module names.
        name: The argument as the user knows it, for the message.

    Raises:
        ValueError: When a name is not one of :data:`LORA_TARGET_MODULES`.
    """
    unknown = [module for module in target_modules if module not in LORA_TARGET_MODULES]
    if unknown:
        raise ValueError(
            f"{name} has unknown module name(s) {unknown}; "
            f"choose from {', '.join(LORA_TARGET_MODULES)}."
        )


@dataclass
class LoraSettings:
    """LoRA hyper-parameters, turned into a ``peft.LoraConfig`` by :func:`inject_lora`.

    Args:
        r: Rank of the low-rank update.
        alpha: LoRA scaling numerator (``scaling = alpha / r``); ``None`` means ``2 * r``.
        dropout: Dropout on the LoRA input.
        target_modules: Linear sub-module names adapted in every backbone-derived block
            (text, and vision/cross blocks when they are initialised from the backbone).
            Allowed: ``q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj``.
    """

    r: int = 4
    alpha: int | None = None
    dropout: float = 0.05
    target_modules: list[LoraTarget] = field(default_factory=_default_targets)

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoraSettings.r must be >= 1, got {self.r}; pass a positive rank.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSettings.dropout must be in [0, 1), got {self.dropout}.")
        if not self.target_modules:
            raise ValueError(
                "LoraSettings.target_modules is empty; name at least one of "
                f"{', '.join(LORA_TARGET_MODULES)} (or pass lora=None to disable LoRA)."
            )
        _check_target_modules(self.target_modules, "LoraSettings.target_modules")

    @property
    def lora_alpha(self) -> int:
        """The effective alpha (``2 * r`` when ``alpha`` is ``None``)."""
        return self.alpha if self.alpha is not None else 2 * self.r

    @classmethod
    def paper_budget(cls, r: PaperBudgetRank, dropout: float = 0.05) -> LoraSettings:
        """Preset with the paper's fixed parameter budget (rank x number of projection types).

        Args:
            r: 8 (``q_proj`` only), 4 (``q_proj`` and ``v_proj``) or 2 (``q,k,v,o``).
            dropout: LoRA dropout.

        Returns:
            The settings for that rank.

        Raises:
            ValueError: When ``r`` is not one of 2, 4, 8.
        """
        ranks = get_args(PaperBudgetRank)
        if r not in ranks:
            allowed = f"{', '.join(map(str, ranks[:-1]))} or {ranks[-1]}"
            raise ValueError(f"paper_budget(r={r}): r must be {allowed} (the paper's budget).")
        targets = list(_PAPER_BUDGET[r])
        return cls(r=r, alpha=2 * r, dropout=dropout, target_modules=targets)
