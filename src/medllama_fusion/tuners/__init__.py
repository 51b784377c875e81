"""Parameter-efficient fine-tuning methods (one sub-package per method, PEFT style)."""

from medllama_fusion.tuners.lora import LORA_TARGET_MODULES, LoraSettings, inject_lora

__all__ = ["LORA_TARGET_MODULES", "LoraSettings", "inject_lora"]
