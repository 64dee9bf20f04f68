"""``stackgan2 eval``: generate images for the test captions and compute FID, IS, R-precision, attribute accuracy.

Protocol (StackGAN++ section 5.1): ``num_samples`` images (30,000 in the paper) from the test split's
captions; sample ``i`` uses test image ``j = i mod N`` and its caption number ``(i div N)`` (cycling),
so 2,933 CUB test images x 10 captions give 29,330 distinct prompts before any repeats. Sample ``i``
gets the noise of ``pipe([caption], seed=seed + i)``, i.e. image 0 of seed ``seed + i``, so every sample
can be regenerated on its own.

- FID against the test split's real images (at the final branch's resolution), on Inception-v3
  pool3 features when ``inception_weights`` is given, else on the dataset classifier's features.
- Inception Score (10 splits) with the dataset classifier's class probabilities (the paper's
  protocol: a network fine-tuned on the dataset), else with ImageNet Inception-v3.
- R-precision with the DAMSM text and image encoders (AttnGAN protocol; see ``r_precision``).
- toy-birds attribute accuracy: generated images whose predicted body and wing colour equal those of
  the test image whose caption was the prompt; the same classifier on the real test images is the
  ceiling.
- Diversity per prompt (``diversity``): S images per prompt with S noise seeds, mean pairwise
  distance of their FID features, against real test images of the prompt's class (``diversity_ratio``
  near 0: the generator ignores its noise). A second generation pass, of its own P * S samples.
Generated images are quantised to uint8 first, exactly as they would be saved as PNG.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stackgan2.config import apply_overrides
from stackgan2.device import resolve_device
from stackgan2.errors import UsageError
from stackgan2.imaging import to_uint8
from stackgan2.io import sha256_file
from stackgan2.metrics.classifier import (
    CLASS_HEAD,
    PROMPT_ATTRIBUTES,
    check_classifier_matches,
    head_accuracies,
    load_classifier,
)
from stackgan2.metrics.diversity import DIVERSITY_SEEDS, diversity_scores
from stackgan2.metrics.frechet import fid_from_features
from stackgan2.metrics.inception import load_inception
from stackgan2.metrics.inception_score import IS_SPLITS, inception_score
from stackgan2.metrics.r_precision import (
    R_PRECISION_CANDIDATES,
    R_PRECISION_FOLDS,
    fold_statistics,
    mismatched_candidates,
    r_precision_hits,
)
from stackgan2.progress import ProgressFn, report

logger = logging.getLogger("stackgan2.metrics")

METRICS = ("fid", "is", "r-precision", "attributes", "diversity")
PAPER_NUM_SAMPLES = 30000  # StackGAN++ section 5.1: IS and FID on 30,000 samples from test captions


def parse_metrics(text: str) -> list[str]:
    """``"fid,is"`` -> ``["fid", "is"]``; unknown names are a ``UsageError``."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise UsageError(f"unknown metric {', '.join(unknown) or repr(text)}; valid: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def sample_plan(num_captions: Sequence[int], num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(image index, caption index) of every sample: image ``i mod N``, caption ``(i div N) mod count``."""
    n = len(num_captions)
    i = np.arange(num_samples)
    images = i % n
    captions = (i // n) % np.asarray(num_captions)[images]
    return images, captions


def sample_noise(seeds: Sequence[int], z_dim: int, c_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z (N, z_dim) and CA eps (N, c_dim) as ``Text2ImagePipeline`` draws image 0 of each seed (z, then eps)."""
    z, eps = torch.empty(len(seeds), z_dim), torch.empty(len(seeds), c_dim)
    for row, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(int(seed))
        z[row] = torch.randn(z_dim, generator=generator)
        eps[row] = torch.randn(c_dim, generator=generator)
    return z, eps


@torch.no_grad()
def generate_final_images(
    pipe: Any, prompts: Sequence[str], seeds: Sequence[int], branch: int = -1, embeddings: np.ndarray | None = None
) -> tuple[np.ndarray, Any]:
    """uint8 (N, R, R, 3) images of one branch (default: the final one), prompt ``n`` with the noise of
    seed ``seeds[n]``, and the encoded prompts.

    Image ``n`` equals ``pipe([prompts[n]], seed=seeds[n]).images[0]`` (for the final branch); unlike
    one pipeline call per prompt, the whole batch goes through G_ema at once. ``embeddings`` (N, text_dim)
    condition the generator instead of the prompts' (a model without text encoder: the dataset's
    char-CNN-RNN ones).
    """
    encoded = pipe.encode(prompts if embeddings is None else None, embeddings)
    z, eps = sample_noise(seeds, pipe.config.model.z_dim, pipe.config.model.eps_dim)
    words = encoded.attention_inputs() if pipe.attends_to_words else {}
    images = pipe.generator(z.to(pipe.device), encoded.embeddings, eps.to(pipe.device), **words)[0][branch]
    return to_uint8(images), encoded


def weights_sha256(*modules: torch.nn.Module) -> str:
    """A hash of the modules' weights (names, dtypes, shapes, bytes): identifies the evaluated model."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            array = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}:{array.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(array.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def find_damsm_encoder(model: Path) -> Path | None:
    """The text-encoder directory beside a run directory or checkpoint file (it keeps the DAMSM image
    encoder), or an imported AttnGAN pipeline's official DAMSM (``damsm/``)."""
    model = Path(model)
    candidates = [model.parent.parent / "text_encoder"] if model.is_file() else [model / "text_encoder", model / "damsm"]
    return next((c for c in candidates if (c / "image_encoder.safetensors").is_file()), None)


@contextlib.contextmanager
def _quiet_prompt_warnings() -> Iterator[None]:
    """Per-prompt truncation warnings would repeat thousands of times; they are summarised instead."""
    text_logger = logging.getLogger("stackgan2.text")
    level = text_logger.level
    text_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        text_logger.setLevel(level)


def _to_float(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> (B, 3, H, W) in [-1, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


class _Judges:
    """The networks that look at images, each loaded once, and what each metric needs from a batch."""

    def __init__(self, wanted: list[str], classifier: Any, inception: Any, damsm: Any) -> None:
        self.wanted, self.classifier, self.damsm = wanted, classifier, damsm
        self.fid_net = inception if inception is not None else classifier
        self.is_net = classifier if classifier is not None else inception

    def only(self, *names: str) -> _Judges:
        """The same networks, computing just what ``names`` need (a pass for one metric)."""
        view = copy.copy(self)
        view.wanted = list(names)
        return view

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Features, class probabilities, attribute predictions; with ``prompts`` also DAMSM features."""
        out: dict[str, np.ndarray] = {}
        cached: dict[int, dict[str, torch.Tensor]] = {}

        def run(net: torch.nn.Module) -> dict[str, torch.Tensor]:
            if id(net) not in cached:
                cached[id(net)] = net(images)
            return cached[id(net)]

        if "fid" in self.wanted or "diversity" in self.wanted:
            out["features"] = run(self.fid_net)["features"].double().cpu().numpy()
        if "is" in self.wanted:
            out["probabilities"] = torch.softmax(run(self.is_net)[CLASS_HEAD].double(), dim=1).cpu().numpy()
        if "attributes" in self.wanted:
            outputs = run(self.classifier)
            for name in self.classifier.spec.attributes:
                out[f"attr:{name}"] = outputs[name].argmax(dim=1).cpu().numpy()
        if prompts is not None and "r-precision" in self.wanted:
            from stackgan2.text.prompt import pad_batch

            size = self.damsm.config.image_size
            resized = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            out["damsm_images"] = self.damsm.image_encoder(resized)[1].double().cpu().numpy()
            ids = [self.damsm.vocab.encode(p, self.damsm.config.max_words).ids for p in prompts]
            sentences = self.damsm.text_encoder(*pad_batch(ids, images.device, self.damsm.vocab))[1]
            out["damsm_sentences"] = sentences.double().cpu().numpy()
        return out


def _collect(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _choose_metrics(
    requested: Sequence[str] | None, classifier: Path | None, inception: Path | None, damsm: Path | None,
    has_attributes: bool,
) -> list[str]:
    """The requested metrics (each checked for what it needs), or every metric the inputs allow."""
    network = "--classifier DIR (stackgan2 train-classifier) or --inception-weights PATH"
    needs = {
        "fid": (classifier or inception, network),
        "is": (classifier or inception, network),
        "diversity": (classifier or inception, network),
        "r-precision": (damsm, "a DAMSM text encoder with its image encoder (--text-encoder DIR, e.g. runs/<name>/text_encoder)"),
        "attributes": (classifier if has_attributes else None,
                       "a dataset with ground-truth attributes (toy-birds) and --classifier DIR trained on it"),
    }
    if requested is None:
        chosen = [name for name in METRICS if needs[name][0] is not None]
        if not chosen:
            raise UsageError(f"nothing to evaluate: pass {network}")
        return chosen
    for name in requested:
        if name not in needs:
            raise UsageError(f"unknown metric {name!r}; valid: {', '.join(METRICS)}")
        if needs[name][0] is None:
            raise UsageError(f"metric {name} needs {needs[name][1]}")
    return list(dict.fromkeys(requested))


def _load_judges(
    wanted: list[str], classifier: Path | None, inception_weights: Path | None, damsm_dir: Path | None,
    dataset: Any, dataset_name: str, device: torch.device,
) -> tuple[_Judges, dict[str, str]]:
    """The networks ``wanted`` needs, checked against the dataset, and a description of what each metric uses."""
    from stackgan2.text import PromptEncoder

    clf_net = inception_net = damsm = None
    described: dict[str, str] = {}
    if classifier is not None:
        clf_net, payload = load_classifier(classifier, device)
        check_classifier_matches(clf_net.spec, dataset_name, int(dataset.num_classes), dataset.attribute_values, classifier)
        described["classifier"] = (
            f"classifier {classifier} ({clf_net.spec.arch}, {clf_net.feature_dim}-d features, "
            f"{clf_net.spec.num_classes} classes, weights sha256 {payload['weights_sha256'][:16]})"
        )
    if inception_weights is not None:
        inception_net = load_inception(inception_weights, device)
        described["inception"] = (
            f"inception_v3 {inception_weights} (torchvision ImageNet, pool3 2048-d / 1000 classes, "
            f"sha256 {sha256_file(Path(inception_weights))[:16]})"
        )
    if "r-precision" in wanted:
        damsm = PromptEncoder.load(damsm_dir, device=device)
        described["damsm"] = f"DAMSM text + image encoders {damsm_dir} ({damsm.image_encoder.backbone} image encoder)"
    uses = {
        "fid": "inception" if inception_net is not None else "classifier",
        "is": "classifier" if clf_net is not None else "inception",
        "r-precision": "damsm",
        "attributes": "classifier",
        "diversity": "inception" if inception_net is not None else "classifier",
    }
    return _Judges(wanted, clf_net, inception_net, damsm), {name: described[uses[name]] for name in wanted}


def _judge_real(
    dataset: Any, size: int, judges: _Judges, batch_size: int, device: torch.device, progress_fn: ProgressFn | None
) -> tuple[dict[str, np.ndarray], str]:
    """What the judges say about every real test image, and a sha256 of the captions, classes and pixels used."""
    digest = hashlib.sha256()
    for captions in dataset.captions:
        digest.update(("\x1f".join(captions) + "\x1e").encode("utf-8"))
    digest.update(np.asarray(dataset.class_ids, dtype=np.int64).tobytes())
    parts, n = [], len(dataset.captions)
    for start in range(0, n, batch_size):
        batch = np.stack([dataset.real_image(j, size) for j in range(start, min(start + batch_size, n))])
        digest.update(batch.tobytes())
        parts.append(judges(_to_float(batch, device)))
        report(progress_fn, "real test images", min(start + batch_size, n), n)
    return _collect(parts), digest.hexdigest()


def _judge_generated(
    pipe: Any, prompts: list[str], seed: int, judges: _Judges, batch_size: int, device: torch.device,
    progress_fn: ProgressFn | None, branch: int = -1, embeddings: np.ndarray | None = None,
    label: str = "generate and judge",
) -> dict[str, np.ndarray]:
    """Generate sample ``i`` from ``prompts[i]`` (or ``embeddings[i]``) with seed ``seed + i``, in batches, and judge it."""
    parts, truncated, with_unknown, n = [], 0, 0, len(prompts)
    with _quiet_prompt_warnings():
        for start in range(0, n, batch_size):
            batch_prompts = prompts[start : start + batch_size]
            batch_embeddings = embeddings[start : start + batch_size] if embeddings is not None else None
            seeds = range(seed + start, seed + start + len(batch_prompts))
            final, encoded = generate_final_images(pipe, batch_prompts, seeds, branch, batch_embeddings)
            truncated += sum(encoded.truncated)
            with_unknown += sum(bool(u) for u in encoded.unknown)
            parts.append(judges(_to_float(final, device), batch_prompts))
            report(progress_fn, label, min(start + batch_size, n), n)
    if truncated or with_unknown:
        logger.warning("%d of %d prompts were cut to the text encoder's word limit; %d contain words it does not know",
                       truncated, n, with_unknown)
    return _collect(parts)


def _scores(
    wanted: list[str], generated: dict[str, np.ndarray], real: dict[str, np.ndarray], candidates: np.ndarray | None,
    attributes: dict[str, np.ndarray] | None, sampled_images: np.ndarray, judges: _Judges,
    named: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``named``: per attribute, which prompts state it (toy-birds); adds accuracy on just those."""
    results: dict[str, Any] = {}
    if "fid" in wanted:
        results["fid"] = fid_from_features(generated["features"], real["features"], ("generated images", "real test images"))
    if "is" in wanted:
        mean, std = inception_score(generated["probabilities"], IS_SPLITS)
        results["inception_score"] = {"mean": mean, "std": std, "splits": IS_SPLITS}
        if len(real["probabilities"]) >= IS_SPLITS:
            real_mean, real_std = inception_score(real["probabilities"], IS_SPLITS)
            results["inception_score_real"] = {"mean": real_mean, "std": real_std, "splits": IS_SPLITS}
    if "r-precision" in wanted:
        hits = r_precision_hits(generated["damsm_images"], generated["damsm_sentences"], candidates)
        mean, std, folds = fold_statistics(hits, R_PRECISION_FOLDS)
        results["r_precision"] = {"value": float(hits.mean()), "mean": mean, "std": std, "folds": folds,
                                  "candidates": R_PRECISION_CANDIDATES, "chance": 1 / R_PRECISION_CANDIDATES}
    if "attributes" in wanted:
        names = list(judges.classifier.spec.attributes)
        truth_real = {n: np.asarray(attributes[n]) for n in names}
        acc_gen = head_accuracies({n: generated[f"attr:{n}"] for n in names},
                                  {n: truth_real[n][sampled_images] for n in names})
        acc_real = head_accuracies({n: real[f"attr:{n}"] for n in names}, truth_real)
        results["attribute_accuracy"] = {
            "generated": acc_gen["prompt_attributes"],
            "real": acc_real["prompt_attributes"],
            "attributes": list(PROMPT_ATTRIBUTES),
            "per_attribute": {n: {"generated": acc_gen[n], "real": acc_real[n]} for n in names},
        }
        if named is not None:
            # A prompt that does not name (say) the wing colour cannot be held to it: "where named"
            # is the accuracy over the prompts that state the attribute.
            for n in names:
                mask = named[n]
                hits = generated[f"attr:{n}"][mask] == truth_real[n][sampled_images][mask]
                results["attribute_accuracy"]["per_attribute"][n].update(
                    {"prompts_naming_it": float(mask.mean()), "generated_where_named": float(hits.mean()) if mask.any() else None}
                )
    return results


def _named_attributes(dataset: str, prompts: Sequence[str], attributes: dict[str, Any] | None) -> dict[str, np.ndarray] | None:
    """For toy-birds captions: per attribute, a mask of the prompts that state it (None otherwise)."""
    if dataset != "toy-birds" or attributes is None:
        return None
    from stackgan2.data.toybirds import named_attributes

    parsed = [named_attributes(p) for p in prompts]
    if any(p is None for p in parsed):
        return None  # captions not made by the toy-birds templates
    return {name: np.array([name in p for p in parsed]) for name in attributes}


def evaluate_model(
    model: Path,
    *,
    data_overrides: dict[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    num_samples: int = PAPER_NUM_SAMPLES,
    classifier: Path | None = None,
    inception_weights: Path | None = None,
    text_encoder: Path | None = None,
    batch_size: int = 50,
    device: str = "auto",
    seed: int = 0,
    branch: int | None = None,
    diversity_seeds: int = DIVERSITY_SEEDS,
    progress_fn: ProgressFn | None = None,
) -> dict[str, Any]:
    """Evaluate a pipeline directory, run directory or checkpoint; returns the JSON-ready report.

    The dataset is the model's own, changed by ``data_overrides`` (dotted keys such as
    ``{"data.dataset": "cub", "data.data_dir": path}``); ``metrics=None`` computes every metric the
    given networks allow; ``text_encoder`` (the DAMSM judge for R-precision) defaults to the model's
    run's ``text_encoder/``; ``branch`` (0 = the base resolution, default the final branch) chooses the
    generator branch that is judged, against real images at that branch's resolution;
    ``diversity_seeds`` is the diversity metric's S (images per prompt). Report keys: ``metrics``,
    ``num_samples``, ``model`` (path, weights sha256), ``dataset`` (name, test images, sha256 of
    captions, classes and real pixels), ``feature_extractors`` (what each metric used), ``seed``, ``seconds``.
    """
    from stackgan2.data import build_dataset
    from stackgan2.pipeline import Text2ImagePipeline, shipped_classifier_dir

    if num_samples < 1 or batch_size < 1:
        raise UsageError(f"--num-samples and --batch-size must be positive, got {num_samples} and {batch_size}")
    if diversity_seeds < 2:
        raise UsageError(f"--diversity-seeds must be at least 2 (distances between images of one prompt), "
                         f"got {diversity_seeds}")
    start_time = time.perf_counter()
    dev = resolve_device(device)
    pipe = Text2ImagePipeline.from_pretrained(model, device=dev)
    data = apply_overrides(pipe.config, overrides=data_overrides).data
    if text_encoder is not None and not (Path(text_encoder) / "image_encoder.safetensors").is_file():
        raise UsageError(f"{text_encoder} holds no DAMSM image encoder (image_encoder.safetensors); R-precision needs one")
    damsm_dir = text_encoder if text_encoder is not None else find_damsm_encoder(model)
    resolutions = pipe.config.model.resolutions
    if branch is not None and not 0 <= branch < len(resolutions):
        raise UsageError(f"--branch {branch}: the model has branches 0..{len(resolutions) - 1} ({resolutions} px)")
    size = resolutions[-1 if branch is None else branch]
    dataset = build_dataset(data, "test", image_sizes=[size], augment=False, seed=seed, progress_fn=progress_fn)
    values = dataset.attribute_values if dataset.attributes is not None else None
    has_attributes = values is not None and all(name in values for name in PROMPT_ATTRIBUTES)
    if classifier is None and data.dataset == "toy-birds":
        classifier = shipped_classifier_dir()  # None when the installation ships none
    wanted = _choose_metrics(metrics, classifier, inception_weights, damsm_dir, has_attributes)
    if "is" in wanted and num_samples < IS_SPLITS:
        raise UsageError(f"the Inception Score needs at least {IS_SPLITS} samples (--num-samples), got {num_samples}")
    if "diversity" in wanted and num_samples < diversity_seeds:
        raise UsageError(f"the diversity metric needs --num-samples of at least --diversity-seeds ({diversity_seeds}), "
                         f"got {num_samples}")

    sampled_images, sampled_captions = sample_plan([len(c) for c in dataset.captions], num_samples)
    prompts = [dataset.captions[j][k] for j, k in zip(sampled_images, sampled_captions, strict=True)]
    conditions = _precomputed_conditions(pipe, dataset, sampled_images, sampled_captions)
    candidates = None
    if "r-precision" in wanted:
        candidates = mismatched_candidates(np.asarray(dataset.class_ids)[sampled_images], R_PRECISION_CANDIDATES, seed)
    judges, extractors = _load_judges(wanted, classifier, inception_weights, damsm_dir, dataset, data.dataset, dev)
    real, dataset_sha256 = _judge_real(dataset, size, judges, batch_size, dev, progress_fn)
    judged_branch = -1 if branch is None else branch
    per_sample = [name for name in wanted if name != "diversity"]  # diversity has a pass of its own, below
    generated = _judge_generated(pipe, prompts, seed, judges.only(*per_sample), batch_size, dev, progress_fn,
                                 judged_branch, conditions) if per_sample else {}
    scores = _scores(wanted, generated, real, candidates, dataset.attributes, sampled_images, judges,
                     _named_attributes(data.dataset, prompts, dataset.attributes))
    if "diversity" in wanted:
        # Prompt p, the p-th sample of the plan, gets S samples of its own: seeds seed + p * S + s.
        num_prompts = min(num_samples // diversity_seeds, sum(len(c) for c in dataset.captions))
        repeated = np.repeat(np.arange(num_prompts), diversity_seeds)
        features = _judge_generated(
            pipe, [prompts[p] for p in repeated], seed, judges.only("diversity"), batch_size, dev, progress_fn,
            judged_branch, None if conditions is None else conditions[repeated], "diversity: generate and judge",
        )["features"]
        class_ids = np.asarray(dataset.class_ids)
        scores.update(diversity_scores(features, real["features"], class_ids[sampled_images[:num_prompts]], class_ids,
                                       diversity_seeds, seed))
    return {
        "metrics": scores,
        "num_samples": num_samples,
        "model": {"path": str(model), "weights_sha256": weights_sha256(pipe.generator, *_text_modules(pipe))},
        "dataset": {"name": data.dataset, "split": "test", "images": len(dataset.captions), "resolution": size,
                    "sha256": dataset_sha256},
        "branch": len(resolutions) - 1 if branch is None else branch,
        "feature_extractors": extractors,
        "seed": seed,
        "seconds": time.perf_counter() - start_time,
    }


def _precomputed_conditions(pipe: Any, dataset: Any, images: np.ndarray, captions: np.ndarray) -> np.ndarray | None:
    """For a model without text encoder (an imported char-CNN-RNN model), the dataset's char-CNN-RNN
    embedding of each sampled (image, caption); None for a model that encodes the captions itself."""
    if pipe.text_encoder is not None:
        return None
    table = getattr(dataset, "char_cnn_rnn", None)
    if table is None or table.shape[-1] != pipe.config.model.text_dim:
        found = "none" if table is None else f"{table.shape[-1]}-d ones"
        raise UsageError(
            f"this model has no text encoder: it is conditioned on {pipe.config.model.text_dim}-d char-CNN-RNN "
            f"embeddings, and the {dataset.name} test set has {found} "
            "(use --dataset cub --data-dir with the official char-CNN-RNN-embeddings.pickle)"
        )
    return np.asarray(table)[images, captions]


def _text_modules(pipe: Any) -> list[torch.nn.Module]:
    return [pipe.text_encoder.text_encoder] if pipe.text_encoder is not None else []
