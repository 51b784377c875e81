"""medllama-fusion: LLaMA-backbone multimodal disease classification (arXiv 2412.01306)."""

__version__ = "0.1.0"
