"""The README's before/after figure: the same prompts and seeds through two pipelines, side by side.

    python docs/side_by_side.py OLD_MODEL NEW_MODEL docs/images/toy-candidate-before-after.png --size 96

Each row is one prompt; the left block holds the first model's images for seeds 0..n-1, the right
block the second model's for the same seeds (final branch, scaled to ``--size`` px).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stackgan2.imaging import save_png
from stackgan2.pipeline import Text2ImagePipeline

PROMPTS = [
    "a small red bird",
    "a blue bird with white wings",
    "a yellow bird with black wings",
    "a green bird",
    "a white bird with grey wings",
    "a purple bird with orange wings",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--old-label", default="before")
    parser.add_argument("--new-label", default="after")
    parser.add_argument("-n", type=int, default=4, help="seeds per prompt")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    blocks = [Text2ImagePipeline.from_pretrained(path, device="cpu")(PROMPTS, num_images_per_prompt=args.n, seed=0).images
              for path in (args.old, args.new)]
    s, n, gap, head, label_w = args.size, args.n, 16, 22, 190
    width = label_w + 2 * n * s + gap
    sheet = Image.new("RGB", (width, head + len(PROMPTS) * s), "white")
    draw = ImageDraw.Draw(sheet)
    for b, title in enumerate((args.old_label, args.new_label)):
        draw.text((label_w + b * (n * s + gap) + 4, 5), title, fill="black")
    for row, prompt in enumerate(PROMPTS):
        y = head + row * s
        draw.text((4, y + s // 2 - 6), prompt, fill="black")
        for b, images in enumerate(blocks):
            for k in range(n):
                image = images[row * n + k].resize((s, s), Image.Resampling.LANCZOS)
                sheet.paste(image, (label_w + b * (n * s + gap) + k * s, y))
    save_png(np.asarray(sheet), args.out)
    print(args.out)


if __name__ == "__main__":
    main()
