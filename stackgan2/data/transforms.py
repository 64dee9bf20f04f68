"""Image geometry shared by all datasets, written to match the official StackGAN-v2 preprocessing.

Official ``get_imgs``: crop a square of side 1.5 x max(bbox w, h) around the bounding-box centre
(clipped to the image), ``transforms.Scale(int(largest * 76 / 64))`` (shorter side, bilinear),
``RandomCrop(largest)`` + ``RandomHorizontalFlip`` and smaller stages by ``Scale`` of that crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BBox = tuple[float, float, float, float]  # x-left, y-top, width, height (CUB bounding_boxes.txt)


def oversize(size: int) -> int:
    """The official 76/64 margin: images are scaled to this before a ``size`` crop (256 -> 304)."""
    return int(size * 76 / 64)


def bbox_crop_box(bbox: BBox, width: int, height: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the official crop: a 1.5 x max(w, h) square around the box centre, clipped."""
    radius = int(max(bbox[2], bbox[3]) * 0.75)
    center_x = int((2 * bbox[0] + bbox[2]) / 2)
    center_y = int((2 * bbox[1] + bbox[3]) / 2)
    return (
        max(0, center_x - radius),
        max(0, center_y - radius),
        min(width, center_x + radius),
        min(height, center_y + radius),
    )


def scale_short_side(image: Image.Image, size: int) -> Image.Image:
    """Official ``transforms.Scale(size)``: the shorter side becomes ``size`` (bilinear, antialiased)."""
    width, height = image.size
    if min(width, height) == size:
        return image
    if width < height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    return image.resize(new_size, Image.BILINEAR)


def fit_array(array: np.ndarray, size: int) -> np.ndarray:
    """``scale_short_side`` for a uint8 (H, W, 3) array; returns the array itself when it already fits."""
    if min(array.shape[:2]) == size:
        return array
    return np.asarray(scale_short_side(Image.fromarray(np.ascontiguousarray(array)), size))


def resize_stages(crop: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """A square uint8 crop resized to every size (bilinear, antialiased as PIL does it; official ``Scale``)."""
    image = Image.fromarray(np.ascontiguousarray(crop))
    return [crop if size == crop.shape[0] else np.asarray(image.resize((size, size), Image.BILINEAR)) for size in sizes]


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``CenterCrop`` placement on an (H, W, 3) array with both sides >= size."""
    top = int(round((array.shape[0] - size) / 2.0))
    left = int(round((array.shape[1] - size) / 2.0))
    return array[top : top + size, left : left + size]


def decode_image(path: Path, bbox: BBox | None, short_side: int, exif_transpose: bool = False) -> np.ndarray | str:
    """Read ``path`` as RGB, crop around ``bbox`` if given and scale its shorter side to ``short_side``.

    Returns the (H, W, 3) uint8 array, or why the file cannot be used (missing, not an image,
    truncated): returned rather than raised so a worker pool can keep going past bad files.
    """
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened) if exif_transpose else opened
            image = image.convert("RGB")  # decodes every byte: a truncated file fails here
    except FileNotFoundError:
        return "no such file"
    except UnidentifiedImageError:
        return "not an image (or not a format Pillow reads)"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__
    if bbox is not None:
        image = image.crop(bbox_crop_box(bbox, *image.size))
    return np.asarray(scale_short_side(image, short_side))
