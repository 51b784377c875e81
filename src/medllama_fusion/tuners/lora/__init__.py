"""LoRA through PEFT: settings with the paper's budget presets and the injection helper."""

from medllama_fusion.tuners.lora.config import LORA_TARGET_MODULES, LoraSettings
from medllama_fusion.tuners.lora.model import inject_lora

__all__ = ["LORA_TARGET_MODULES", "LoraSettings", "inject_lora"]
