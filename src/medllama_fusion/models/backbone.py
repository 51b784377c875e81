"""LLaMA-family backbone: load (hub id, local dir, GGUF) or build, verify, trim and quantize.

The backbone keeps the token embeddings and the first ``num_text_layers`` decoder layers as the
text stack. It can hand further pretrained layers to the fusion model (vision / cross blocks) via
:meth:`LlamaBackbone.take_extra_layers`. The final norm, the LM head and every unused layer are
dropped (only the needed layers are even instantiated: the config is loaded with
``num_hidden_layers`` set to the number of layers needed, so the remaining checkpoint tensors are
never materialised).

Loading is verified: the loading report of transformers must have no missing or shape-mismatched
tensor among the kept modules, and when the checkpoint is a local safetensors checkpoint every
kept, non-quantized tensor is compared bit-for-bit with the file. Any discrepancy raises a
``ValueError`` naming the file and the tensors.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
)
from transformers.models.llama.modeling_llama import LlamaModel, LlamaRotaryEmbedding

from medllama_fusion.errors import InputError, check_choice
from medllama_fusion.extras import require
from medllama_fusion.models.layers import LlamaBlockStack, share_weights_copy

__all__ = [
    "AttnImplementation",
    "BackboneConfig",
    "DTypeName",
    "LlamaBackbone",
    "Quantization",
    "quantize_linear_layers",
    "quantized_device",
    "resolve_dtype",
]

#: Dtype of the base (and compute dtype of a quantized base).
DTypeName = Literal["float32", "bfloat16", "float16"]
#: bitsandbytes quantization of the frozen base: NF4 (``bnb.nn.Linear4bit``) or LLM.int8().
Quantization = Literal["4bit", "8bit"]
#: Attention kernel of the decoder layers.
AttnImplementation = Literal["sdpa", "eager"]

_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in get_args(DTypeName)}


def resolve_dtype(name: str) -> torch.dtype:
    """Map a :data:`DTypeName` (``"float32" | "bfloat16" | "float16"``) to a torch dtype.

    Args:
        name: Dtype name.

    Returns:
        The dtype.

    Raises:
        ValueError: For an unknown name.
    """
    check_choice(name, DTypeName, "BackboneConfig.dtype")
    return _DTYPES[name]


def _holds_tensors(module: nn.Module) -> bool:
    """Whether ``module`` directly (not through a child) holds a parameter or buffer."""
    tensors = itertools.chain(module.parameters(recurse=False), module.buffers(recurse=False))
    return next(tensors, None) is not None


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with a fixed RNG seed without touching the global RNG state."""
    devices = [] if device.type != "cuda" else [device.index or torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@dataclass
class BackboneConfig:
    """Where the LLaMA backbone comes from and how it runs.

    Exactly one of ``pretrained`` and ``config`` must be given.

    Args:
        pretrained: Hub id, local directory (``save_pretrained`` layout) or path to a ``.gguf``
            file (GGUF needs the ``gguf`` extra). Resolved offline when ``local_files_only``.
        random_init: With ``pretrained``: read only the architecture (``config.json`` of the
            directory or cached hub id, or the GGUF metadata) and build that shape with random
            weights seeded by ``init_seed``; no weight is loaded. The control run "same
            architecture, no pretraining".
        gguf_file: GGUF file name inside ``pretrained`` (a directory or hub repo).
        config: ``LlamaConfig`` keyword arguments for a randomly initialised backbone (tests,
            quickstart). Initialisation is deterministic by ``init_seed`` regardless of the
            global RNG, so the frozen base can be rebuilt bit-identically.
        init_seed: Seed of the random initialisation (``config`` or ``random_init``).
        init_device: Device the random base is built and initialised on (``config`` or
            ``random_init``):
            ``"cpu"`` (default) or e.g. ``"cuda"``, which builds a LLaMA-2-7B-size base in
            seconds. The random values depend on the device's generator, so a checkpoint of a
            random-base model must be rebuilt with the same ``init_device``.
        num_text_layers: Number of pretrained decoder layers forming the text stack (paper: 3).
        dtype: ``"float32" | "bfloat16" | "float16"`` of the base (and compute dtype when
            quantized).
        quantization: ``None | "4bit" (NF4) | "8bit"`` frozen base via bitsandbytes (QLoRA;
            needs the ``qlora`` extra).
        attn_implementation: ``"sdpa"`` (default) or ``"eager"``.
        causal: Causal self-attention over text (default bidirectional with a padding mask).
        gradient_checkpointing: Recompute each block in backward (``torch.utils.checkpoint``).
        local_files_only: Never contact the Hugging Face Hub.
        revision: Hub revision (branch, tag or commit).
    """

    pretrained: str | None = None
    random_init: bool = False
    gguf_file: str | None = None
    config: dict[str, Any] | None = None
    init_seed: int = 0
    init_device: str = "cpu"
    num_text_layers: int = 3
    dtype: DTypeName = "float32"
    quantization: Quantization | None = None
    attn_implementation: AttnImplementation = "sdpa"
    causal: bool = False
    gradient_checkpointing: bool = False
    local_files_only: bool = True
    revision: str | None = None

    def __post_init__(self) -> None:
        if (self.pretrained is None) == (self.config is None):
            raise ValueError(
                "BackboneConfig needs exactly one of `pretrained` (hub id, directory or .gguf "
                "file) and `config` (LlamaConfig kwargs for a random backbone)."
            )
        if self.random_init and self.pretrained is None:
            raise ValueError(
                "BackboneConfig.random_init=True needs `pretrained` (the source of the "
                "architecture); with `config` the backbone is random already."
            )
        if self.num_text_layers < 0:
            raise ValueError(
                f"BackboneConfig.num_text_layers must be >= 0, got {self.num_text_layers}."
            )
        resolve_dtype(self.dtype)
        check_choice(self.quantization, Quantization | None, "BackboneConfig.quantization")
        check_choice(
            self.attn_implementation, AttnImplementation, "BackboneConfig.attn_implementation"
        )
        if self.config is not None:
            hidden = int(self.config.get("hidden_size", 4096))
            heads = int(self.config.get("num_attention_heads", 32))
            kv_heads = int(self.config.get("num_key_value_heads", heads))
            if hidden % heads != 0 and "head_dim" not in self.config:
                raise ValueError(
                    f"BackboneConfig.config: hidden_size={hidden} is not divisible by "
                    f"num_attention_heads={heads}; change one of them (or set head_dim)."
                )
            if heads % kv_heads != 0:
                raise ValueError(
                    f"BackboneConfig.config: num_attention_heads={heads} is not divisible by "
                    f"num_key_value_heads={kv_heads}; change num_key_value_heads."
                )

    def source_name(self) -> str:
        """Human-readable name of the weights' source (for error messages)."""
        if self.pretrained is None:
            return f"random config (init_seed={self.init_seed})"
        name = str(Path(self.pretrained) / self.gguf_file) if self.gguf_file else self.pretrained
        if self.random_init:
            return f"architecture of {name} with random weights (init_seed={self.init_seed})"
        return name


def _split_gguf(cfg: BackboneConfig) -> tuple[str, str | None]:
    """Return ``(pretrained, gguf_file)`` with a ``.gguf`` path split into dir + name.

    A GGUF source needs the ``gguf`` extra (checked here, before anything is read).
    """
    assert cfg.pretrained is not None
    if cfg.gguf_file is None and cfg.pretrained.lower().endswith(".gguf"):
        path = Path(cfg.pretrained)
        if not path.is_file():
            raise FileNotFoundError(
                f"BackboneConfig.pretrained={cfg.pretrained!r}: GGUF file not found; "
                "give an existing .gguf path."
            )
        require("gguf", "GGUF backbones")
        return str(path.parent), path.name
    if cfg.gguf_file is not None:
        require("gguf", "GGUF backbones")
    if (
        cfg.gguf_file is not None
        and Path(cfg.pretrained).is_dir()
        and not (Path(cfg.pretrained) / cfg.gguf_file).is_file()
    ):
        raise FileNotFoundError(
            f"BackboneConfig.gguf_file={cfg.gguf_file!r} not found in {cfg.pretrained!r}; "
            "check the file name."
        )
    return cfg.pretrained, cfg.gguf_file


def _check_llama_config(config: PretrainedConfig, cfg: BackboneConfig) -> None:
    for attr in ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size"):
        if not hasattr(config, attr):
            raise ValueError(
                f"backbone {cfg.source_name()!r} has no `{attr}` in its config; "
                "use a LLaMA-family causal LM."
            )


def _kept_prefixes(num_layers: int) -> tuple[str, ...]:
    return ("model.embed_tokens.", *(f"model.layers.{i}." for i in range(num_layers)))


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted({directory / name for name in weight_map.values()})
    single = directory / "model.safetensors"
    return [single] if single.is_file() else []


def _checkpoint_dir(pretrained: str, revision: str | None) -> Path | None:
    """Local folder holding the checkpoint files, or ``None`` when not found.

    That is the directory itself, or for a hub id its snapshot in the local Hugging Face cache
    (resolved offline).
    """
    if Path(pretrained).is_dir():
        return Path(pretrained)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(pretrained, revision=revision, local_files_only=True)
    except (HFValidationError, LocalEntryNotFoundError, OSError, ValueError):
        return None
    return Path(folder)


def _verify_against_safetensors(
    module_tensors: dict[str, Tensor],
    files: list[Path],
    num_layers: int,
    skip: frozenset[str] = frozenset(),
) -> list[str]:
    """Compare kept tensors with the checkpoint; return a list of problems."""
    from safetensors import safe_open

    prefixes = _kept_prefixes(num_layers)
    seen: set[str] = set()
    problems: list[str] = []
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                name = key if key.startswith("model.") else f"model.{key}"
                if not name.startswith(prefixes) or name in skip:
                    continue
                seen.add(name)
                if name not in module_tensors:
                    problems.append(f"{key}: in {file.name} but not in the model")
                    continue
                loaded = module_tensors[name]
                stored = handle.get_tensor(key)
                if tuple(stored.shape) != tuple(loaded.shape):
                    problems.append(
                        f"{key}: shape {tuple(stored.shape)} in {file.name}, "
                        f"{tuple(loaded.shape)} in the model"
                    )
                elif not torch.equal(stored.to(loaded.dtype), loaded.detach().cpu()):
                    problems.append(f"{key}: values differ from {file.name}")
    for name in sorted(set(module_tensors) - seen):
        problems.append(f"{name}: not found in any checkpoint file (left at random init)")
    return problems


def _verify_against_gguf(
    module_tensors: dict[str, Tensor], path: Path, config: PretrainedConfig
) -> list[str]:
    """Compare kept tensors with the GGUF file's tensors as transformers de-quantizes them."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with torch.device("meta"):  # only names and shapes are needed for the GGUF → HF name map
        shell = AutoModelForCausalLM.from_config(copy.deepcopy(config))
    stored = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=shell)["tensors"]
    problems: list[str] = []
    for name, loaded in module_tensors.items():
        if name not in stored:
            problems.append(f"{name}: not found in {path.name} (left at random init)")
            continue
        ref = torch.as_tensor(stored[name])
        if tuple(ref.shape) != tuple(loaded.shape):
            shapes = f"{tuple(ref.shape)} in {path.name}, {tuple(loaded.shape)} in the model"
            problems.append(f"{name}: shape {shapes}")
        elif not torch.equal(ref.to(loaded.dtype), loaded.detach().cpu()):
            problems.append(f"{name}: values differ from {path.name}")
    return problems


def quantized_device() -> str:
    """Device a bitsandbytes-quantized checkpoint is loaded onto in this process.

    Under DDP every rank loads onto its own GPU: ``cuda:$LOCAL_RANK`` (set by torchrun and
    Lightning's launcher), unless that index is not visible (one GPU per process through
    ``CUDA_VISIBLE_DEVICES``), then the current CUDA device; ``"cpu"`` without CUDA.

    Returns:
        A device string for ``device_map={"": device}``.
    """
    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    if (
        local_rank is not None
        and local_rank.isdigit()
        and int(local_rank) < torch.cuda.device_count()
    ):
        return f"cuda:{int(local_rank)}"
    return f"cuda:{torch.cuda.current_device()}"


def quantize_linear_layers(
    module: nn.Module, mode: Quantization, compute_dtype: torch.dtype
) -> int:
    """Replace every ``nn.Linear`` inside ``module`` by a frozen bitsandbytes layer.

    Args:
        module: Module modified in place.
        mode: ``"4bit"`` (NF4, ``bnb.nn.Linear4bit``) or ``"8bit"`` (``bnb.nn.Linear8bitLt``).
        compute_dtype: Compute dtype of the 4-bit layers.

    Returns:
        Number of replaced layers.

    Raises:
        ValueError: For another ``mode``.
        InputError: If bitsandbytes is not installed (the ``qlora`` extra).
    """
    check_choice(mode, Quantization, "quantize_linear_layers: mode")
    require("qlora", "quantization (QLoRA)")
    import bitsandbytes as bnb

    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            device = child.weight.device
            # 4-bit quantizes on whatever device `.to(device)` targets; 8-bit from CPU only.
            weight = child.weight.detach()
            if mode == "8bit":
                weight = weight.to("cpu")
            new: nn.Module
            if mode == "4bit":
                new = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=compute_dtype,
                    quant_type="nf4",
                )
                new.weight = bnb.nn.Params4bit(
                    weight.to(compute_dtype), requires_grad=False, quant_type="nf4"
                )
            else:
                new = bnb.nn.Linear8bitLt(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    has_fp16_weights=False,
                    threshold=6.0,
                )
                new.weight = bnb.nn.Int8Params(
                    weight.to(compute_dtype), requires_grad=False, has_fp16_weights=False
                )
            if child.bias is not None:
                new.bias = nn.Parameter(child.bias.detach().to(compute_dtype), requires_grad=False)
            new = new.to(device)  # quantizes
            setattr(parent, name, new)
            replaced += 1
    return replaced


@functools.lru_cache(maxsize=4)
def _gguf_config(path: str, size: int, mtime_ns: int) -> PretrainedConfig:
    """The transformers config of a local GGUF file, parsed once per file version.

    Reading a GGUF's metadata walks every field (the whole tokenizer vocabulary): about 5 s for
    SmolLM2-135M. ``size`` and ``mtime_ns`` are part of the key so a rewritten file is read again;
    callers get a deep copy.
    """
    del size, mtime_ns  # cache key only
    file = Path(path)
    return AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name)  # type: ignore[no-any-return]


class LlamaBackbone(nn.Module):
    """Token embeddings + the first decoder layers of a LLaMA-family causal LM.

    Every tensor the backbone loads (or builds at random) is frozen. The backbone keeps the set of
    module objects holding them, :attr:`frozen_modules`: each module that directly holds a
    parameter or buffer of the token embedding or of a loaded decoder layer (embedding,
    ``nn.Linear`` or bitsandbytes layers, norms), the layers handed out by
    :meth:`take_extra_layers` included, plus the weight-sharing copies made by
    :meth:`shared_copy`. Modules are tracked by identity, so the set stays valid when the model
    moves to another device and when PEFT wraps a ``Linear`` in a LoRA layer (the original
    module lives on as ``<name>.base_layer``). :class:`~medllama_fusion.models.FusionModel`
    reads it to decide what trains (parameters of frozen modules do not) and what adapter
    checkpoints leave out (their tensors are rebuilt from the configuration on load), see
    :meth:`~medllama_fusion.models.FusionModel.frozen_module_names`.

    Args:
        config: Backbone configuration.
        num_extra_layers: Further pretrained layers to load after the text layers, handed out by
            :meth:`take_extra_layers` (vision / cross blocks).

    Attributes:
        llama_config: The transformers config (``num_hidden_layers`` = layers loaded).
        embed_tokens: Frozen token embedding.
        text_stack: The text decoder layers (``text_stack.layers``) run as one stack.
        rotary_emb: RoPE module (cos/sin computed once per forward by the caller).
        loading_report: What was verified while loading (source, files, tensors compared).
    """

    def __init__(self, config: BackboneConfig, num_extra_layers: int = 0) -> None:
        super().__init__()
        self.backbone_config = config
        self.dtype_ = resolve_dtype(config.dtype)
        needed = config.num_text_layers + num_extra_layers
        if config.quantization is not None:
            require("qlora", f"BackboneConfig.quantization={config.quantization!r} (QLoRA)")
        self.loading_report: dict[str, Any] = {"source": config.source_name()}
        if config.config is not None:
            kwargs = dict(config.config)
            kwargs.setdefault("tie_word_embeddings", False)
            model = self._build_random(config, LlamaConfig(**kwargs), needed)
        elif config.random_init:
            pretrained, gguf_file = _split_gguf(config)
            architecture = self._load_config(config, pretrained, gguf_file)
            model = self._build_random(config, architecture, needed)
        else:
            model = self._load_pretrained(config, needed)
        inner: Any = model.model
        self.llama_config: LlamaConfig = inner.config
        self.embed_tokens: nn.Embedding = inner.embed_tokens
        all_layers = list(inner.layers[:needed])
        del model, inner  # frees final norm, lm_head, unused layers
        self._frozen_modules: set[nn.Module] = {
            module
            for root in (self.embed_tokens, *all_layers)
            for module in root.modules()
            if _holds_tensors(module)
        }
        self.text_stack = LlamaBlockStack(all_layers[: config.num_text_layers], config.causal)
        self.text_stack.gradient_checkpointing = config.gradient_checkpointing
        self._extra: list[nn.Module] = all_layers[config.num_text_layers :]
        self.rotary_emb = LlamaRotaryEmbedding(self.llama_config)
        for param in self.parameters():
            param.requires_grad_(False)

    # ------------------------------------------------------------------ loading
    def _layers_available_error(self, available: int, needed: int) -> ValueError:
        cfg = self.backbone_config
        return ValueError(
            f"backbone {cfg.source_name()!r} has {available} decoder layers but "
            f"{needed} are needed (num_text_layers={cfg.num_text_layers} plus "
            f"{needed - cfg.num_text_layers} for vision/cross blocks); lower num_text_layers, "
            "VisionConfig.num_layers or num_cross_layers, or use blocks_init='random'."
        )

    def _load_config(
        self, cfg: BackboneConfig, pretrained: str, gguf_file: str | None
    ) -> PretrainedConfig:
        """The source's transformers config (``config.json`` or GGUF metadata), offline-aware."""
        common: dict[str, Any] = {"local_files_only": cfg.local_files_only}
        if cfg.revision is not None:
            common["revision"] = cfg.revision
        if gguf_file is not None:
            common["gguf_file"] = gguf_file
        try:
            local_gguf = Path(pretrained, gguf_file) if gguf_file is not None else None
            if local_gguf is not None and local_gguf.is_file():
                stat = local_gguf.stat()
                llama_config = copy.deepcopy(
                    _gguf_config(str(local_gguf.resolve()), stat.st_size, stat.st_mtime_ns)
                )
            else:
                llama_config = AutoConfig.from_pretrained(pretrained, **common)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"BackboneConfig.pretrained={cfg.pretrained!r}: cannot load a config ({err}); "
                "pass a local directory with config.json, a .gguf file, or a cached hub id."
            ) from err
        _check_llama_config(llama_config, cfg)
        return llama_config  # type: ignore[no-any-return]

    def _build_random(
        self, cfg: BackboneConfig, llama_config: PretrainedConfig, needed: int
    ) -> nn.Module:
        llama_config._attn_implementation = cfg.attn_implementation
        if needed > llama_config.num_hidden_layers:
            raise self._layers_available_error(llama_config.num_hidden_layers, needed)
        if needed < 1 and llama_config.num_hidden_layers < 1:
            raise ValueError("BackboneConfig.config: num_hidden_layers must be >= 1.")
        # Only the layers that are kept are built (a 7B-size base would otherwise cost
        # 27 GB and minutes); values are a deterministic function of (config, seed, needed).
        llama_config.num_hidden_layers = max(needed, 1)
        if getattr(llama_config, "layer_types", None) is not None:
            llama_config.layer_types = llama_config.layer_types[: max(needed, 1)]
        device = torch.device(cfg.init_device)
        with _seeded(cfg.init_seed, device), device:
            model = _RandomLlama(llama_config)
        model.to(self.dtype_)
        if cfg.quantization is not None:
            for layer in model.model.layers[:needed]:
                quantize_linear_layers(layer, cfg.quantization, self.dtype_)
        self.loading_report.update(verified="random init", num_layers=needed)
        if cfg.random_init:
            self.loading_report["architecture_from"] = cfg.pretrained
        return model

    def _load_pretrained(self, cfg: BackboneConfig, needed: int) -> nn.Module:
        pretrained, gguf_file = _split_gguf(cfg)
        common: dict[str, Any] = {"local_files_only": cfg.local_files_only}
        if cfg.revision is not None:
            common["revision"] = cfg.revision
        if gguf_file is not None:
            common["gguf_file"] = gguf_file
        source = cfg.source_name() if gguf_file is None else str(Path(pretrained) / gguf_file)
        llama_config = self._load_config(cfg, pretrained, gguf_file)
        available = int(llama_config.num_hidden_layers)
        if needed > available:
            raise self._layers_available_error(available, needed)
        llama_config.num_hidden_layers = max(needed, 1)
        if hasattr(llama_config, "layer_types") and llama_config.layer_types is not None:
            llama_config.layer_types = llama_config.layer_types[: max(needed, 1)]
        kwargs: dict[str, Any] = dict(
            common,
            config=llama_config,
            dtype=self.dtype_,
            attn_implementation=cfg.attn_implementation,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
        use_bnb_config = cfg.quantization is not None and gguf_file is None
        if use_bnb_config:
            from transformers import BitsAndBytesConfig

            if cfg.quantization == "4bit":
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=self.dtype_,
                )
            else:
                kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            kwargs["device_map"] = {"": quantized_device()}
        loaded: Any = AutoModelForCausalLM.from_pretrained(pretrained, **kwargs)
        model: Any = loaded[0]
        info: dict[str, Any] = loaded[1]
        prefixes = _kept_prefixes(needed)
        missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(prefixes))
        mismatched = sorted(
            str(k) for k in info.get("mismatched_keys", ()) if str(k).startswith(prefixes)
        )
        problems = [f"{k}: missing from the checkpoint" for k in missing]
        problems += [f"{k}: shape mismatch" for k in mismatched]
        problems += [str(m) for m in info.get("error_msgs", ())]
        files: list[Path] = []
        compared = 0
        checkpoint_dir = _checkpoint_dir(pretrained, cfg.revision)
        gguf_path: Path | None = None
        if gguf_file is not None:
            if Path(source).is_file():
                gguf_path = Path(source)
            elif checkpoint_dir is not None and (checkpoint_dir / gguf_file).is_file():
                gguf_path = checkpoint_dir / gguf_file
        if not problems and gguf_path is not None:
            kept = {n: t for n, t in model.state_dict().items() if n.startswith(prefixes)}
            problems = _verify_against_gguf(kept, gguf_path, llama_config)
            files, compared = [gguf_path], len(kept)
        elif not problems and gguf_file is None and checkpoint_dir is not None:
            files = _safetensors_files(checkpoint_dir)
            if files:
                tensors = {
                    name: tensor
                    for name, tensor in model.state_dict().items()
                    if name.startswith(prefixes)
                }
                all_kept = set(tensors)
                if use_bnb_config:  # quantized weights cannot be compared bit-for-bit
                    quantized = {
                        n.rsplit(".", 1)[0]
                        for n, m in model.named_modules()
                        if "Linear4bit" in type(m).__name__ or "Linear8bit" in type(m).__name__
                    }
                    tensors = {
                        n: t
                        for n, t in tensors.items()
                        if not any(n.startswith(q + ".") for q in quantized)
                        and t.is_floating_point()
                    }
                compared = len(tensors)
                skip = frozenset(all_kept - set(tensors))
                problems = _verify_against_safetensors(tensors, files, needed, skip)
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise ValueError(
                f"pretrained weights in {source!r} do not match the model "
                f"({len(problems)} problem(s)):\n  {shown}{more}\n"
                "Re-download or re-save the checkpoint, or point `pretrained` at the right one."
            )
        model.train()  # from_pretrained returns eval mode; keep every module's mode uniform
        if not use_bnb_config:
            model.to(self.dtype_)
        if cfg.quantization is not None and not use_bnb_config:
            for layer in model.model.layers[:needed]:
                quantize_linear_layers(layer, cfg.quantization, self.dtype_)
        if not files:
            warnings.warn(
                f"backbone {source!r}: no local checkpoint file was found to compare the loaded "
                "tensors with; only transformers' loading report was checked.",
                stacklevel=3,
            )
        self.loading_report.update(
            verified=("gguf" if gguf_file else "safetensors") if files else "loading-info",
            files=[str(f) for f in files],
            tensors_compared=compared,
            num_layers=needed,
        )
        return model

    # ------------------------------------------------------------------ API
    @property
    def hidden_size(self) -> int:
        """Hidden size of the backbone."""
        return int(self.llama_config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the (non-quantized) base tensors and the compute dtype."""
        return self.dtype_

    @property
    def layers(self) -> nn.ModuleList:
        """The text decoder layers."""
        return self.text_stack.layers

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None, position_embeddings: Any
    ) -> Tensor:
        """Run the text layers on embeddings ``[B, L, D]``.

        Args:
            hidden_states: Token embeddings.
            attention_mask: Mask from :func:`build_self_attention_mask`.
            position_embeddings: RoPE ``(cos, sin)`` from :meth:`rotary`.

        Returns:
            ``[B, L, D]`` hidden states.
        """
        return self.text_stack(hidden_states, attention_mask, position_embeddings)  # type: ignore[no-any-return]

    @property
    def frozen_modules(self) -> frozenset[nn.Module]:
        """The module objects holding the backbone's frozen tensors (see the class docstring)."""
        return frozenset(self._frozen_modules)

    def shared_copy(self, layer: nn.Module) -> nn.Module:
        """A copy of a backbone layer: new module objects holding the same frozen tensors.

        Wrapping a module of the copy (LoRA) leaves the original untouched, while the weights
        exist once in memory. The copies of frozen modules join :attr:`frozen_modules`. Cross
        layers use it for their second direction.

        Args:
            layer: A layer of this backbone (e.g. one returned by :meth:`take_extra_layers`).

        Returns:
            The copy.

        Raises:
            ValueError: When ``layer`` holds no frozen module of this backbone.
        """
        copied = share_weights_copy(layer)
        twins = [
            twin
            for module, twin in zip(layer.modules(), copied.modules(), strict=True)
            if module in self._frozen_modules
        ]
        if not twins:
            raise ValueError(
                f"shared_copy: {type(layer).__name__} holds no frozen module of this backbone; "
                "pass a layer returned by take_extra_layers."
            )
        self._frozen_modules.update(twins)
        return copied

    def take_extra_layers(self, count: int) -> list[nn.Module]:
        """Hand out the next ``count`` pretrained layers (after the text layers).

        Args:
            count: Number of layers.

        Returns:
            The layers, in backbone order.

        Raises:
            ValueError: When fewer layers remain.
        """
        if count > len(self._extra):
            raise ValueError(
                f"backbone has {len(self._extra)} extra layers left, {count} requested; "
                "pass num_extra_layers when building LlamaBackbone."
            )
        taken, self._extra = self._extra[:count], self._extra[count:]
        return taken

    def rotary(self, hidden_states: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """RoPE ``(cos, sin)`` for positions ``0..length-1``, shape ``[1, length, head_dim]``.

        Args:
            hidden_states: Any tensor with the target dtype/device.
            length: Sequence length.

        Returns:
            The cos/sin pair shared by all layers of one forward.
        """
        positions = torch.arange(length, device=hidden_states.device)[None, :]
        return self.rotary_emb(hidden_states, positions)  # type: ignore[no-any-return]

    def check_vocabulary(self, size: int, tokenizer: str = "the tokenizer") -> None:
        """Raise when a tokenizer's ids do not all have a row in the token embedding.

        Args:
            size: The tokenizer's vocabulary size (``len(tokenizer)``).
            tokenizer: The tokenizer, named in the message.

        Raises:
            InputError: When ``size`` exceeds the embedding's rows.
        """
        rows = self.embed_tokens.num_embeddings
        if size > rows:
            raise InputError(
                f"{tokenizer} has {size} tokens but the backbone "
                f"{self.backbone_config.source_name()!r} embeds only {rows}: use the backbone's "
                "own tokenizer (preprocessing.tokenizer), or, for a random backbone, set "
                f"backbone.config.vocab_size to at least {size}."
            )

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings ``[B, L, D]``.

        Args:
            input_ids: ``[B, L]`` token ids.

        Returns:
            The embeddings (ids are not range-checked here to avoid a host sync).
        """
        return self.embed_tokens(input_ids)  # type: ignore[no-any-return]


class _RandomLlama(nn.Module):
    """Minimal causal-LM-shaped holder (``.model``) for a seeded random base model."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        if type(config) is LlamaConfig:
            self.model: Any = LlamaModel(config)
        else:  # another LLaMA-family architecture read from a pretrained source
            self.model = AutoModel.from_config(config)
