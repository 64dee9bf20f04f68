"""Data-loading throughput: training items per second for each dataset, as JSON.

Each dataset is loaded like training does (train split, augment, 3-stage sizes 64/128/256, batch 24,
shuffled DataLoader) and timed over ``--batches`` batches after a warm-up. toy-birds uses the real
default cache (rendered on first use); cub, flowers and folder use the directories you give, or
else a synthetic copy in the real layouts built from toy-birds pictures saved as CUB-sized JPEGs
(500 x 375), so the decode cache and the crop/resize path are measured without a download.

    python benchmarks/data_throughput.py [--workers 0 2] [--cub-dir D] [--flowers-dir D] [--folder-dir D]
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stackgan2.config import DataConfig
from stackgan2.data import build_dataset
from stackgan2.data.storage import available_cores
from stackgan2.data.toybirds import load_toy_birds

BATCH_SIZE = 24
IMAGE_SIZES = [64, 128, 256]
JPEG_SIZE = (500, 375)  # a typical CUB photo


def synthesize(root: Path, count: int) -> dict[str, Path]:
    """cub (with boxes), flowers and folder datasets of ``count`` toy-birds pictures in the real layouts."""
    toy = load_toy_birds(DataConfig(toy_train_size=count, toy_test_size=1, cache_dir=root / "toy-cache"), "train")
    names = [f"{toy.class_ids[i]:03d}.toy/bird_{i:05d}" for i in range(count)]
    rng = np.random.default_rng(0)
    birds, flowers, folder = root / "birds", root / "flowers", root / "folder"
    image_lines, box_lines = [], []
    for i, name in enumerate(names):
        picture = Image.fromarray(np.asarray(toy.images[i])).resize(JPEG_SIZE, Image.BILINEAR)
        for path in (birds / "CUB_200_2011" / "images" / f"{name}.jpg", flowers / "images" / f"{name}.jpg",
                     folder / f"{name}.jpg"):
            path.parent.mkdir(parents=True, exist_ok=True)
            picture.save(path, quality=90)
        for text in (birds / "text" / f"{name}.txt", flowers / "text" / f"{name}.txt", folder / f"{name}.txt"):
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("\n".join(toy.captions[i]) + "\n")
        image_lines.append(f"{i + 1} {name}.jpg")
        box_lines.append(f"{i + 1} 120.0 80.0 260.0 220.0")
    (birds / "CUB_200_2011" / "images.txt").write_text("\n".join(image_lines) + "\n")
    (birds / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(box_lines) + "\n")
    for meta in (birds, flowers):
        split_dir = meta / "train"
        split_dir.mkdir(parents=True, exist_ok=True)
        (split_dir / "filenames.pickle").write_bytes(pickle.dumps(names, protocol=2))
        (split_dir / "class_info.pickle").write_bytes(pickle.dumps(toy.class_ids.tolist(), protocol=2))
        embeddings = rng.standard_normal((count, 10, 1024)).astype(np.float32)
        (split_dir / "char-CNN-RNN-embeddings.pickle").write_bytes(pickle.dumps(embeddings, protocol=2))
    return {"cub": birds, "flowers": flowers, "folder": folder}


def measure(cfg: DataConfig, workers: int, batches: int) -> dict[str, float | int | str]:
    prepare = time.perf_counter()
    dataset = build_dataset(cfg, "train", IMAGE_SIZES, augment=True, seed=0)
    prepare = time.perf_counter() - prepare
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    iterator = iter(loader)
    for _ in range(2):  # warm-up: worker start, page cache
        next(iterator)
    start, done = time.perf_counter(), 0
    while done < batches:
        try:
            next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        done += 1
    elapsed = time.perf_counter() - start
    return {"dataset": cfg.dataset, "workers": workers, "images": len(dataset), "prepare_s": round(prepare, 2),
            "images_per_s": round(done * BATCH_SIZE / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to try")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per measurement")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache root (default: the user cache)")
    parser.add_argument("--cub-dir", type=Path, help="a real birds/ folder (default: synthetic)")
    parser.add_argument("--flowers-dir", type=Path, help="a real flowers/ folder (default: synthetic)")
    parser.add_argument("--folder-dir", type=Path, help="a real image folder (default: synthetic)")
    parser.add_argument("--synthetic-images", type=int, default=480, help="images per synthetic dataset")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        given = {"cub": args.cub_dir, "flowers": args.flowers_dir, "folder": args.folder_dir}
        synthetic = {}
        if not all(given.values()):
            synthetic = synthesize(Path(scratch) / "data", args.synthetic_images)
        # Decode caches of synthetic data are thrown away with the scratch folder.
        configs = [DataConfig(cache_dir=args.cache_dir)] + [
            DataConfig(dataset=name, data_dir=given[name] or synthetic[name],
                       cache_dir=args.cache_dir if given[name] else Path(scratch) / "cache")
            for name in ("cub", "flowers", "folder")
        ]
        for cfg in configs:
            for workers in args.workers:
                result = measure(cfg, workers, args.batches)
                result["source"] = "built-in" if cfg.dataset == "toy-birds" else "given" if given[cfg.dataset] else "synthetic"
                results.append(result)
    print(json.dumps({"batch_size": BATCH_SIZE, "image_sizes": IMAGE_SIZES, "cores": available_cores(),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
