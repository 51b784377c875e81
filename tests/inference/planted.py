"""Demo pictures and reports with one planted finding at known pixels and words.

Images come from the demo generator's :func:`draw_frontal`; the planted region of a sample is
where the picture with the finding differs from the same picture (same random state) without
it. Reports use the demo generator's sentence templates; the planted words are the finding's
positive sentence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from medllama_fusion.data.dataset import model_inputs
from medllama_fusion.demo.generator import _FINDINGS, _NEGATIVE_ONLY_SENTENCES, draw_frontal
from medllama_fusion.models import BackboneConfig, ParallelFusion, VisionConfig
from medllama_fusion.tuners.lora import LoraSettings

FINDING = "Consolidation"
DISTRACTORS = ("Cardiomegaly", "Support-Devices", "Lung-Lesion", "Pleural-Effusion")
SIZE = 32
PATCH = 4


@dataclass
class Planted:
    image: np.ndarray  # uint8 [SIZE, SIZE]
    report: str
    label: int
    region: np.ndarray  # bool [SIZE, SIZE], planted pixels (empty when not drawn)
    sentence: str  # planted sentence ("" when not mentioned)


def make_samples(n: int, seed: int) -> list[Planted]:
    rng = random.Random(seed)
    out = []
    for index in range(n):
        label = int(rng.random() < 0.5)
        drawn = label and rng.random() < 0.75
        told = label and (not drawn or rng.random() < 0.6)
        side = rng.choice(("left", "right"))
        others = {name: 1 for name in DISTRACTORS if rng.random() < 0.3}
        sides = {name: rng.choice(("left", "right")) for name in (FINDING, *DISTRACTORS)}
        sides[FINDING] = side
        image = draw_frontal(
            {**others, FINDING: int(drawn)},
            sides,
            SIZE,
            np.random.default_rng(seed * 100003 + index),
        )
        plain = draw_frontal(others, sides, SIZE, np.random.default_rng(seed * 100003 + index))
        region = np.abs(image.astype(int) - plain.astype(int)) > 8
        sentences = [
            rng.choice(_FINDINGS[name][1]).format(
                side=sides[name], grade="mild", size="small", grade_cap="Mild", size_cap="Small"
            )
            for name in others
            if rng.random() < 0.7
        ]
        planted = ""
        if told:
            planted = rng.choice(_FINDINGS[FINDING][1]).format(side=side)
            sentences.append(planted)
        elif rng.random() < 0.5:
            sentences.append(_FINDINGS[FINDING][2])
        sentences += [
            _FINDINGS[name][2]
            for name in ("Edema", "Pneumothorax", "Fracture")
            if rng.random() < 0.5
        ]
        if not sentences:
            sentences.append(rng.choice(_NEGATIVE_ONLY_SENTENCES))
        rng.shuffle(sentences)
        out.append(Planted(image, " ".join(sentences), label, region, planted))
    return out


def tiny_model(vocab_size: int) -> ParallelFusion:
    return ParallelFusion(
        backbone=BackboneConfig(
            config=dict(
                vocab_size=vocab_size,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=128,
            ),
            num_text_layers=1,
        ),
        vision=VisionConfig(image_size=SIZE, patch_size=PATCH, in_channels=1, num_layers=1),
        lora=LoraSettings(r=4),
        num_labels=1,
        num_cross_layers=1,
        dropout=0.0,
        blocks_init="random",
        modality_dropout=0.0,
    )


def train(pipe, samples: list[Planted], steps: int, seed: int = 0, lr: float = 3e-3) -> None:
    torch.manual_seed(seed)
    batch = model_inputs(pipe.make_batch([s.image for s in samples], [s.report for s in samples]))
    labels = torch.tensor([[float(s.label)] for s in samples])
    model = pipe.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(samples), generator=gen)[:32]
        sub = {k: v[idx] for k, v in batch.items() if v is not None}
        logits = model(**sub).logits
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
