"""Attention-mask helpers, a bidirectional stack of LLaMA decoder blocks, and cross-attention.

Design notes:

* Self-attention blocks are transformers' ``LlamaDecoderLayer`` instances (taken from the loaded
  backbone, or freshly created from its config). They are run bidirectionally: the layer's
  ``self_attn.is_causal`` flag is switched off and a boolean key-padding mask is passed, so SDPA
  never applies its implicit causal mask. ``causal=True`` builds an explicit causal mask instead.
* Cross-attention uses **no RoPE**: queries and keys come from different modalities, whose
  positions (token index vs. patch raster index) are not on a common axis, so a relative
  rotation between them carries no meaning. Position information is already inside the hidden
  states (RoPE in the self-attention stacks, learned position embeddings for patches).
* A cross block has the parameter names and shapes of a ``LlamaDecoderLayer``
  (``cross_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``, ``input_layernorm``,
  ``post_attention_layernorm``) plus ``context_layernorm`` (RMSNorm of the keys/values side), so it
  can adopt the modules of a pretrained decoder layer and LoRA targets it the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaMLP, LlamaRMSNorm

__all__ = [
    "CrossAttention",
    "CrossAttentionBlock",
    "CrossAttentionLayer",
    "LlamaBlockStack",
    "build_self_attention_mask",
    "key_padding_mask",
    "new_decoder_layer",
    "share_weights_copy",
]

RotaryEmbeddings = tuple[Tensor, Tensor]


def key_padding_mask(valid: Tensor) -> Tensor:
    """Boolean key mask ``[B, L]`` that is never all-False in a row.

    A row without any valid key would make softmax produce NaN; such rows (empty inputs) attend to
    every position instead. Their outputs are excluded from pooling anyway.

    Args:
        valid: ``[B, L]`` tensor, non-zero/True for real tokens.

    Returns:
        Boolean ``[B, L]`` mask.
    """
    valid = valid.bool()
    return valid | ~valid.any(dim=-1, keepdim=True)


def build_self_attention_mask(
    valid: Tensor, causal: bool, dtype: torch.dtype, as_bool: bool = True
) -> Tensor:
    """Build the 4-D attention mask for self-attention over a padded sequence, once per forward.

    Args:
        valid: ``[B, L]`` validity (1 = real token, 0 = padding).
        causal: Add a causal (lower-triangular) constraint.
        dtype: Dtype of the additive mask when ``as_bool`` is False.
        as_bool: Return a boolean mask (SDPA) instead of an additive float mask (eager).

    Returns:
        ``[B, 1, 1, L]`` (bidirectional) or ``[B, 1, L, L]`` (causal) mask.
    """
    keys = key_padding_mask(valid)[:, None, None, :]
    if causal:
        length = valid.shape[-1]
        tril = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
        # keep the diagonal so right-padded (pad) queries still see at least themselves
        keys = (keys & tril) | torch.eye(length, dtype=torch.bool, device=valid.device)
    if as_bool:
        return keys
    zero = torch.zeros((), dtype=dtype, device=valid.device)
    return torch.where(keys, zero, torch.finfo(dtype).min)


def new_decoder_layer(config: LlamaConfig, layer_idx: int = 0) -> LlamaDecoderLayer:
    """Create a randomly initialised ``LlamaDecoderLayer`` (LLaMA init: N(0, initializer_range)).

    Args:
        config: Backbone config (sizes, attention implementation).
        layer_idx: Layer index stored in the attention module.

    Returns:
        The new layer.
    """
    layer = LlamaDecoderLayer(config, layer_idx)
    for module in layer.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return layer


class LlamaBlockStack(nn.Module):
    """A stack of ``LlamaDecoderLayer`` blocks run bidirectionally (or causally) with RoPE.

    Args:
        layers: The decoder layers (pretrained or new).
        causal: Use causal self-attention instead of bidirectional.
    """

    def __init__(self, layers: Sequence[nn.Module], causal: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.causal = causal
        self.gradient_checkpointing = False
        for layer in self.layers:
            attn = getattr(layer, "self_attn", None)
            if attn is not None:
                attn.is_causal = causal

    def forward(
        self,
        hidden_states: Tensor,
        attention_mask: Tensor | None,
        position_embeddings: RotaryEmbeddings,
    ) -> Tensor:
        """Run all blocks.

        Args:
            hidden_states: ``[B, L, D]``.
            attention_mask: 4-D mask from :func:`build_self_attention_mask` or ``None`` (no
                padding; bidirectional unless ``causal``).
            position_embeddings: RoPE ``(cos, sin)`` computed once per forward.

        Returns:
            ``[B, L, D]`` hidden states.
        """
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if use_ckpt:
                hidden_states = checkpoint(
                    _run_decoder_layer,
                    layer,
                    hidden_states,
                    attention_mask,
                    position_embeddings,
                    use_reentrant=False,
                )
            else:
                hidden_states = _run_decoder_layer(
                    layer, hidden_states, attention_mask, position_embeddings
                )
        return hidden_states


def share_weights_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with new module objects but the same parameter and buffer tensors.

    Wrapping a submodule of the copy (e.g. PEFT replacing a ``Linear`` by a LoRA layer) leaves
    the original untouched, while the weights exist once in memory.

    Args:
        module: The module to copy.

    Returns:
        The structural copy.
    """
    memo: dict[int, object] = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


def _compute_dtype(block: nn.Module, default: torch.dtype) -> torch.dtype:
    """Dtype a LLaMA-style block computes in: that of its ``input_layernorm`` weight.

    Norms are never quantized, so this is the base dtype for a frozen (possibly quantized)
    block and float32 for a new, fully trained one.
    """
    norm = getattr(block, "input_layernorm", None)
    weight = getattr(norm, "weight", None)
    return weight.dtype if isinstance(weight, Tensor) else default


def _run_decoder_layer(
    layer: nn.Module,
    hidden_states: Tensor,
    attention_mask: Tensor | None,
    position_embeddings: RotaryEmbeddings,
) -> Tensor:
    stream_dtype = hidden_states.dtype
    compute = _compute_dtype(layer, stream_dtype)
    if compute != stream_dtype:  # a float32 trained block inside a low-precision stream
        hidden_states = hidden_states.to(compute)
        cos, sin = position_embeddings
        position_embeddings = (cos.to(compute), sin.to(compute))
    out = layer(
        hidden_states, attention_mask=attention_mask, position_embeddings=position_embeddings
    )
    # transformers < 4.54 returned a tuple
    out = out[0] if isinstance(out, tuple) else out
    return out.to(stream_dtype)  # type: ignore[no-any-return]


class CrossAttention(nn.Module):
    """Multi-head (grouped-query) cross-attention with SDPA and a key-padding mask, no RoPE.

    Args:
        config: Backbone config (hidden size, heads, kv heads, head dim, bias).
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.num_heads = int(config.num_attention_heads)
        self.num_kv_heads = int(config.num_key_value_heads or self.num_heads)
        hidden = int(config.hidden_size)
        self.head_dim = int(getattr(config, "head_dim", None) or hidden // self.num_heads)
        self.attention_dropout = float(config.attention_dropout or 0.0)
        bias = bool(config.attention_bias)
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=bias)

    def forward(self, hidden_states: Tensor, context: Tensor, key_mask: Tensor | None) -> Tensor:
        """Attend from ``hidden_states`` (queries) to ``context`` (keys/values).

        Args:
            hidden_states: ``[B, Lq, D]`` normalised queries.
            context: ``[B, Lk, D]`` normalised keys/values.
            key_mask: ``[B, 1, 1, Lk]`` boolean mask (True = attend) or ``None``.

        Returns:
            ``[B, Lq, D]`` attention output (after ``o_proj``).
        """
        bsz, q_len, _ = hidden_states.shape
        k_len = context.shape[1]
        query = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim)
        key = self.k_proj(context).view(bsz, k_len, self.num_kv_heads, self.head_dim)
        value = self.v_proj(context).view(bsz, k_len, self.num_kv_heads, self.head_dim)
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=key_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        out = out.transpose(1, 2).reshape(bsz, q_len, self.num_heads * self.head_dim)
        return self.o_proj(out)


class CrossAttentionBlock(nn.Module):
    """One direction of cross-attention as a LLaMA-style pre-norm block.

    ``x = x + gate * o_proj(attn(input_layernorm(x), context_layernorm(ctx)))`` followed by
    ``x = x + mlp(post_attention_layernorm(x))`` (SwiGLU).

    Args:
        config: Backbone config.
        source: Optional decoder layer whose modules (projections, MLP, norms) are adopted, so
            the block starts from pretrained weights. ``context_layernorm`` is a new RMSNorm
            initialised from ``source.input_layernorm``.
    """

    def __init__(self, config: LlamaConfig, source: nn.Module | None = None) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(config)
        if source is None:
            for module in self.cross_attn.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=config.initializer_range)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
            self.mlp: nn.Module = LlamaMLP(config)
            for module in self.mlp.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=config.initializer_range)
            self.input_layernorm: nn.Module = LlamaRMSNorm(
                config.hidden_size, eps=config.rms_norm_eps
            )
            self.post_attention_layernorm: nn.Module = LlamaRMSNorm(
                config.hidden_size, eps=config.rms_norm_eps
            )
        else:
            attn = source.self_attn  # type: ignore[union-attr]
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(self.cross_attn, name, getattr(attn, name))
            self.mlp = source.mlp  # type: ignore[assignment]
            self.input_layernorm = source.input_layernorm  # type: ignore[assignment]
            self.post_attention_layernorm = source.post_attention_layernorm  # type: ignore[assignment]
        # trainable: float32 even when the adopted (frozen) modules are low precision
        self.context_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps).float()
        if source is not None:
            ref = self.input_layernorm.weight
            assert isinstance(ref, Tensor)
            with torch.no_grad():
                self.context_layernorm.weight.copy_(ref.detach().to(torch.float32))

    def forward(
        self, hidden_states: Tensor, context: Tensor, key_mask: Tensor | None, gate: Tensor | None
    ) -> Tensor:
        """Update ``hidden_states`` with information from ``context``.

        Args:
            hidden_states: ``[B, Lq, D]`` query-side stream.
            context: ``[B, Lk, D]`` key/value-side stream.
            key_mask: ``[B, 1, 1, Lk]`` boolean key-padding mask or ``None``.
            gate: ``[B, 1, 1]`` per-sample multiplier of the attention update (0 drops the other
                modality for that sample) or ``None``.

        Returns:
            ``[B, Lq, D]``.
        """
        stream_dtype = hidden_states.dtype
        compute = _compute_dtype(self, stream_dtype)
        hidden_states = hidden_states.to(compute)
        context = self.context_layernorm(context.to(compute)).to(compute)
        attn = self.cross_attn(self.input_layernorm(hidden_states), context, key_mask)
        if gate is not None:
            attn = attn * gate.to(attn.dtype)
        hidden_states = hidden_states + attn
        out = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return out.to(stream_dtype)  # type: ignore[no-any-return]


class CrossAttentionLayer(nn.Module):
    """Bidirectional cross-attention: text attends to image and image attends to text.

    Both directions read the inputs of the layer (not each other's output), so the layer is
    symmetric. When initialised from a pretrained decoder layer (one backbone layer per cross
    layer), ``text_to_image`` adopts its modules and ``image_to_text`` gets its own module
    objects that hold the **same** frozen weight tensors (no second copy in memory); adapters
    added later (LoRA) are separate per direction, because they wrap distinct modules.

    Args:
        config: Backbone config.
        source: Optional pretrained decoder layer to initialise both directions from.
        image_to_text_source: The module objects ``image_to_text`` adopts when ``source`` is
            given: a copy of ``source`` holding the same tensors. ``None`` makes one with
            :func:`share_weights_copy`; the fusion models pass
            ``backbone.shared_copy(source)`` (:meth:`LlamaBackbone.shared_copy`), so that the
            backbone tracks the copy as frozen.

    Raises:
        ValueError: When ``image_to_text_source`` is given without ``source``.
    """

    def __init__(
        self,
        config: LlamaConfig,
        source: nn.Module | None = None,
        image_to_text_source: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if image_to_text_source is not None and source is None:
            raise ValueError(
                "CrossAttentionLayer: image_to_text_source needs source (the layer it copies)."
            )
        copy_source = image_to_text_source
        if source is not None and copy_source is None:
            copy_source = share_weights_copy(source)
        self.text_to_image = CrossAttentionBlock(config, source)
        self.image_to_text = CrossAttentionBlock(config, copy_source)
        self.gradient_checkpointing = False

    def forward(
        self,
        text: Tensor,
        image: Tensor,
        text_key_mask: Tensor | None,
        image_key_mask: Tensor | None,
        text_gate: Tensor | None = None,
        image_gate: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Exchange information between the two streams.

        Args:
            text: ``[B, Lt, D]`` text stream.
            image: ``[B, Li, D]`` image stream.
            text_key_mask: ``[B, 1, 1, Lt]`` boolean mask of valid text tokens (image queries).
            image_key_mask: ``[B, 1, 1, Li]`` boolean mask of valid patches, or ``None``.
            text_gate: ``[B, 1, 1]`` 1/0 whether the text is present (gates text→image update).
            image_gate: ``[B, 1, 1]`` 1/0 whether the image is present.

        Returns:
            The updated ``(text, image)`` streams.
        """
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            new_text = checkpoint(
                self.text_to_image, text, image, image_key_mask, image_gate, use_reentrant=False
            )
            new_image = checkpoint(
                self.image_to_text, image, text, text_key_mask, text_gate, use_reentrant=False
            )
        else:
            new_text = self.text_to_image(text, image, image_key_mask, image_gate)
            new_image = self.image_to_text(image, text, text_key_mask, text_gate)
        return new_text, new_image
