"""DAMSM pretraining of the text and image encoders, their evaluation, and caption embedding.

``pretrain_text_encoder`` is the ``stackgan2 pretrain-text`` command and phase 0 of ``train``: it
builds the vocabulary from the training captions, trains ``TextEncoder`` and ``ImageEncoder`` jointly
with the DAMSM sentence and word losses (AttnGAN, Xu et al., CVPR 2018; optimiser settings from
AttnGAN's ``pretrain_DAMSM.py``), measures image-to-text R-precision on the test split and saves a
``PromptEncoder`` directory. With ``train.embeddings = "char-cnn-rnn"`` a linear head on the
sentence embedding is trained in the same loop to regress the dataset's original char-CNN-RNN
embeddings (cosine + MSE), so that free sentences map into the space the GAN is trained on.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from stackgan2.config import ExperimentConfig
from stackgan2.device import resolve_device
from stackgan2.errors import DataError, TrainingError, UsageError
from stackgan2.progress import ProgressFn, report
from stackgan2.text.damsm import regression_loss, sentence_loss, sentence_scores, word_loss
from stackgan2.text.encoders import BACKBONES, Backbone, ImageEncoder, RegressionHead, TextEncoder
from stackgan2.text.prompt import PromptEncoder, check_output_directory, pad_batch
from stackgan2.text.vocab import Vocabulary

logger = logging.getLogger("stackgan2.text")

ADAM_BETAS = (0.5, 0.999)   # AttnGAN pretrain_DAMSM.py
RNN_GRAD_CLIP = 0.25        # AttnGAN cfg TRAIN.RNN_GRAD_CLIP
LR_DECAY = 0.98             # AttnGAN: lr *= 0.98 after every epoch while lr > initial lr / 10
R_PRECISION_CANDIDATES = 100  # AttnGAN: 1 true caption among 100


def _device(device: str | torch.device) -> torch.device:
    """A device name (auto, cpu, cuda, mps), or an explicit device such as ``"cuda:1"``."""
    if isinstance(device, torch.device) or ":" in device:
        return torch.device(device)
    return resolve_device(device)


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Only what DAMSM needs from a dataset item: the first image size, the caption and its labels."""
    return {
        "images": torch.stack([item["images"][0] for item in items]),
        "captions": [item["caption"] for item in items],
        "caption_index": torch.tensor([item["caption_index"] for item in items], dtype=torch.long),
        "class_id": torch.tensor([item["class_id"] for item in items], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
    }


def _loader(dataset: Any, cfg: ExperimentConfig, batch_size: int, shuffle: bool, device: torch.device) -> DataLoader:
    workers = cfg.data.workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle,  # AttnGAN drops the last partial training batch: fewer negatives would skew the loss
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(cfg.train.seed) if shuffle else None,
    )


def _caption_batch(
    vocab: Vocabulary, captions: list[str], max_words: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids and lengths of dataset captions (truncated silently: they are not user prompts)."""
    return pad_batch([vocab.encode(c, max_words).ids for c in captions], device, vocab)


def pretrain_text_encoder(
    cfg: ExperimentConfig,
    out_dir: Path,
    *,
    device: str = "cpu",
    progress_fn: ProgressFn | None = None,
    image_backbone: Backbone = "cnn",
    backbone_weights: Path | None = None,
) -> dict[str, Any]:
    """Pretrain on ``cfg.data``'s train split for ``cfg.text.epochs`` and save to ``out_dir``; returns metrics."""
    out_dir = Path(out_dir)
    check_output_directory(out_dir)
    _check_backbone(image_backbone, backbone_weights)
    from stackgan2 import data

    sizes = [cfg.text.image_size]
    train_set, test_set = (
        data.build_dataset(cfg.data, split, image_sizes=sizes, augment=split == "train", seed=cfg.train.seed,
                           progress_fn=progress_fn, wrong_images=False)
        for split in ("train", "test")
    )
    encoder = fit_prompt_encoder(
        cfg, train_set, test_set, device=device, progress_fn=progress_fn,
        image_backbone=image_backbone, backbone_weights=backbone_weights,
    )
    encoder.save(out_dir)
    return encoder.metrics


def _check_backbone(image_backbone: str, backbone_weights: Path | None) -> None:
    if image_backbone not in BACKBONES:
        raise UsageError(f"unknown image backbone {image_backbone!r}; valid: {', '.join(BACKBONES)}")
    if image_backbone == "cnn" and backbone_weights is not None:
        raise UsageError("backbone weights apply to --image-backbone inception_v3 or mobilenet_v2, not cnn")
    if image_backbone != "cnn" and backbone_weights is None:
        raise UsageError(
            f"image backbone {image_backbone} needs its ImageNet weights file (--backbone-weights); "
            "nothing is downloaded"
        )


def fit_prompt_encoder(
    cfg: ExperimentConfig,
    train_set: Any,
    test_set: Any,
    *,
    device: str | torch.device = "cpu",
    progress_fn: ProgressFn | None = None,
    image_backbone: Backbone = "cnn",
    backbone_weights: Path | None = None,
) -> PromptEncoder:
    """DAMSM training on ``train_set``, evaluation on ``test_set``; the metrics ride on ``encoder.metrics``.

    The datasets follow the ``stackgan2.data`` interface (``captions``, ``class_ids``,
    ``char_cnn_rnn``, ``set_epoch`` and items with ``images``/``caption``/``caption_index``/
    ``class_id``/``index``), built with ``image_sizes=[cfg.text.image_size]``.
    """
    _check_backbone(image_backbone, backbone_weights)
    tc = cfg.text
    device = _device(device)
    regress = cfg.train.embeddings == "char-cnn-rnn"
    if regress and (train_set.char_cnn_rnn is None or test_set.char_cnn_rnn is None):
        raise DataError(
            f"--embeddings char-cnn-rnn needs the dataset's char-CNN-RNN embeddings, which {cfg.data.dataset} "
            "does not provide (cub and flowers do)"
        )
    batch_size = min(tc.batch_size, len(train_set))
    if batch_size < 2:
        raise DataError(f"DAMSM pretraining needs at least 2 training images, got {len(train_set)}")
    torch.manual_seed(cfg.train.seed)
    started = time.perf_counter()

    vocab = Vocabulary.build(itertools.chain.from_iterable(train_set.captions), tc.min_count)
    text_encoder = TextEncoder(len(vocab), tc.word_dim, tc.dim, tc.dropout).to(device)
    image_encoder = ImageEncoder(tc.dim, tc.image_width, image_backbone, backbone_weights).to(device)
    head, targets = None, None
    if regress:
        targets = torch.as_tensor(train_set.char_cnn_rnn, dtype=torch.float32)
        head = RegressionHead(tc.dim, targets.shape[-1])
        with torch.no_grad():  # start from the best constant prediction, the mean embedding
            head.linear.bias.copy_(targets.mean(dim=(0, 1)))
        head.to(device)
    modules = [m for m in (text_encoder, image_encoder, head) if m is not None]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.lr, betas=ADAM_BETAS)

    loader = _loader(train_set, cfg, batch_size, shuffle=True, device=device)
    total_steps = tc.epochs * len(loader)
    loss_names = ["sentence", "word"] + (["regression"] if regress else [])
    loss_history: list[float] = []
    step = 0
    for module in modules:
        module.train()
    for epoch in range(tc.epochs):
        train_set.set_epoch(epoch)
        sums = dict.fromkeys(loss_names, 0.0)
        for batch in loader:
            ids, lengths = _caption_batch(vocab, batch["captions"], tc.max_words, device)
            class_ids = batch["class_id"].to(device)
            words, sentence = text_encoder(ids, lengths)
            regions, image_global = image_encoder(batch["images"].to(device, non_blocking=True))
            losses = {
                "sentence": sentence_loss(image_global, sentence, class_ids, tc.gamma3),
                "word": word_loss(regions, words, lengths, class_ids, tc.gamma1, tc.gamma2, tc.gamma3),
            }
            if head is not None:
                target = targets[batch["index"], batch["caption_index"]].to(device)
                losses["regression"] = regression_loss(head(sentence), target)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise TrainingError(f"DAMSM loss became {loss.item()} at epoch {epoch} step {step}; try a lower text.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(text_encoder.parameters(), RNN_GRAD_CLIP)
            optimizer.step()
            step += 1
            for name in loss_names:
                sums[name] += losses[name].item()
            report(progress_fn, "pretrain text encoder", step, total_steps, epoch=epoch + 1, loss=loss.item())
        loss_history.append(sum(sums.values()) / len(loader))
        if optimizer.param_groups[0]["lr"] > tc.lr / 10:
            for group in optimizer.param_groups:
                group["lr"] *= LR_DECAY

    encoder = PromptEncoder(vocab, text_encoder, tc, head, image_encoder)
    metrics: dict[str, Any] = {
        "dataset": cfg.data.dataset,
        "embeddings": cfg.train.embeddings,
        "vocab_size": len(vocab),
        "train_images": len(train_set),
        "test_images": len(test_set),
        "epochs": tc.epochs,
        "steps": step,
        "loss_history": loss_history,
        "final_losses": {name: value / len(loader) for name, value in sums.items()},
    }
    metrics.update(evaluate_r_precision(encoder, test_set, device=device, seed=cfg.train.seed, progress_fn=progress_fn))
    if regress:
        metrics["char_cnn_rnn_cosine"] = char_cnn_rnn_cosine(encoder, test_set, device=device)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    encoder.metrics = metrics
    logger.info(
        "text encoder: test R-precision %.1f%% (chance %.1f%%)%s",
        100 * metrics["r_precision"],
        100 * metrics["r_precision_chance"],
        f", char-CNN-RNN regression cosine {metrics['char_cnn_rnn_cosine']:.3f}" if regress else "",
    )
    return encoder


@torch.no_grad()
def evaluate_r_precision(
    encoder: PromptEncoder,
    dataset: Any,
    *,
    device: str | torch.device = "cpu",
    candidates: int = R_PRECISION_CANDIDATES,
    seed: int = 0,
    batch_size: int = 128,
    progress_fn: ProgressFn | None = None,
) -> dict[str, float | int]:
    """Image-to-text R-precision (R = 1) with DAMSM global features, as in AttnGAN.

    Each image ranks one of its own captions (drawn with ``seed``) against ``candidates - 1``
    captions of images of other classes (other images when the dataset has one class) by cosine
    similarity; the score is the fraction of images whose own caption ranks first (a tie is a miss).
    With fewer eligible images every one is a candidate: ``r_precision_candidates`` is the largest
    candidate set used and ``r_precision_chance`` what a random ranking would score.
    """
    if encoder.image_encoder is None:
        raise UsageError("R-precision needs the image encoder; this text encoder was saved without one")
    device = _device(device)
    encoder.to(device)
    encoder.text_encoder.eval()
    encoder.image_encoder.eval()
    rng = np.random.default_rng(seed)
    n = len(dataset)
    captions = [caps[int(rng.integers(len(caps)))] for caps in dataset.captions]
    image_features, sentence_features, order = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    for batch in loader:
        _, image_global = encoder.image_encoder(batch["images"].to(device))
        image_features.append(image_global)
        batch_captions = [captions[i] for i in batch["index"].tolist()]
        ids, lengths = _caption_batch(encoder.vocab, batch_captions, encoder.config.max_words, device)
        sentence_features.append(encoder.text_encoder(ids, lengths)[1])
        order.append(batch["index"])
        report(progress_fn, "evaluate R-precision", sum(len(f) for f in image_features), n)
    scores = sentence_scores(torch.cat(image_features), torch.cat(sentence_features)).cpu().numpy()
    class_ids = np.asarray(dataset.class_ids)[torch.cat(order).numpy()]
    single_class = len(np.unique(class_ids)) < 2
    hits, chance, largest = 0, 0.0, 1
    for i in range(n):
        eligible = np.flatnonzero(np.arange(n) != i) if single_class else np.flatnonzero(class_ids != class_ids[i])
        negatives = rng.choice(eligible, size=min(candidates - 1, len(eligible)), replace=False)
        hits += bool(scores[i, i] > scores[i, negatives].max(initial=-math.inf))
        chance += 1 / (1 + len(negatives))
        largest = max(largest, 1 + len(negatives))
    return {"r_precision": hits / n, "r_precision_chance": chance / n, "r_precision_candidates": largest}


@torch.no_grad()
def encode_dataset_captions(
    encoder: PromptEncoder, dataset: Any, device: str | torch.device = "cpu", batch_size: int = 256
) -> np.ndarray:
    """(N, C, dim) float32 embeddings of every caption of every image; C = most captions of any image.

    Images with fewer captions repeat theirs cyclically, so every row holds real captions.
    """
    device = _device(device)
    encoder.to(device)
    encoder.text_encoder.eval()
    per_image = [list(caps) for caps in dataset.captions]
    empty = [i for i, caps in enumerate(per_image) if not caps]
    if empty:
        raise DataError(f"image {empty[0]} of the dataset has no caption ({len(empty)} images without captions)")
    c = max(len(caps) for caps in per_image)
    flat = [caps[k % len(caps)] for caps in per_image for k in range(c)]
    chunks = []
    for start in range(0, len(flat), batch_size):
        ids, lengths = _caption_batch(encoder.vocab, flat[start : start + batch_size], encoder.config.max_words, device)
        chunks.append(encoder.embed(ids, lengths).float().cpu())
    return torch.cat(chunks).numpy().reshape(len(per_image), c, encoder.dim)


def char_cnn_rnn_cosine(encoder: PromptEncoder, dataset: Any, device: str | torch.device = "cpu") -> float:
    """Mean cosine similarity of predicted and original char-CNN-RNN embeddings over every caption."""
    predicted = torch.from_numpy(encode_dataset_captions(encoder, dataset, device))
    target = torch.as_tensor(dataset.char_cnn_rnn, dtype=torch.float32)
    c = min(predicted.shape[1], target.shape[1])
    counts = torch.tensor([len(caps) for caps in dataset.captions])
    valid = torch.arange(c)[None, :] < counts[:, None]          # skip the repeated padding captions
    cos = torch.nn.functional.cosine_similarity(predicted[:, :c], target[:, :c], dim=2)
    return float(cos[valid].mean())
