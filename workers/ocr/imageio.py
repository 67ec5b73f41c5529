"""Loading an untrusted image file with bounded memory: every bad file becomes a TaskInputError.

The pixel count is checked from the header, before a single pixel is decoded, so a decompression bomb
(a small file declaring huge dimensions) costs nothing. Large images are reduced right after decoding
(JPEG decodes at reduced scale directly) so that every later buffer is bounded by ``work_pixels``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.errors import TaskInputError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# What PIL's decoders raise on damaged data (truncated streams, bad chunks, broken headers).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, EOFError, IndexError)


@dataclass(frozen=True)
class LoadedImage:
    """The decoded image: RGB for the detector, grey for the recognizer, both uint8 and same size."""

    rgb: np.ndarray[Any, Any]
    grey: np.ndarray[Any, Any]
    source_size: tuple[int, int]  # (width, height) as declared by the file
    scale: float  # source pixels per working pixel (>= 1)


def load_image(path: Path, max_pixels: int, work_pixels: int) -> LoadedImage:
    """Decode ``path`` or raise TaskInputError saying what is wrong with it."""
    _check_file(path)
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Our check below reads the declared size and says it in the error; PIL's own guard (which
        # also fires inside some decoders, e.g. on later TIFF frames) is set up as a second line.
        Image.MAX_IMAGE_PIXELS = None
        try:
            image = _open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return _decode(image, max_pixels, work_pixels)
        finally:
            image.close()


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise TaskInputError(f"input file {path.name!r} does not exist")
    if path.stat().st_size == 0:
        raise TaskInputError(f"input file {path.name!r} is empty")


def _open(path: Path) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise TaskInputError(f"{path.name!r} is not an image in a format this service reads") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TaskInputError(f"{path.name!r} declares too many pixels: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise TaskInputError(f"{path.name!r} is corrupt: {exc}") from None
    return image


def _decode(image: Image.Image, max_pixels: int, work_pixels: int) -> LoadedImage:
    from PIL import Image

    width, height = image.size
    if width <= 0 or height <= 0:
        raise TaskInputError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise TaskInputError(
            f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels"
        )
    try:
        rgb_image = _decode_reduced(image, work_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TaskInputError(f"image declares too many pixels: {exc}") from None
    except MemoryError:
        raise TaskInputError("image is too large to decode") from None
    except _DECODE_ERRORS as exc:
        raise TaskInputError(f"image is corrupt or truncated: {exc}") from None
    return _to_arrays(rgb_image, (width, height))


def _decode_reduced(image: Image.Image, work_pixels: int) -> Image.Image:
    """Decode frame 0, reduced to at most ``work_pixels``, upright, as RGB on white."""
    from PIL import ImageOps

    factor = _reduce_factor(image.size, work_pixels)
    if factor > 1 and image.format == "JPEG":
        # libjpeg decodes at 1/2, 1/4, 1/8 scale directly: the full-size buffer never exists.
        image.draft("RGB", (image.size[0] // factor, image.size[1] // factor))
    image.load()
    factor = _reduce_factor(image.size, work_pixels)
    if factor > 1:
        image = image.reduce(factor)
    image = ImageOps.exif_transpose(image) or image
    return _to_rgb(image)


def _reduce_factor(size: tuple[int, int], work_pixels: int) -> int:
    return max(1, math.ceil(math.sqrt(size[0] * size[1] / work_pixels)))


def _to_rgb(image: Image.Image) -> Image.Image:
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _stretch_to_8bit(image)
    if "A" in image.getbands() or "transparency" in image.info:
        # Transparent areas often hide black pixels: put the image on white paper, as a viewer would.
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, "white")
        paper.alpha_composite(rgba)
        return paper.convert("RGB")
    return image.convert("RGB")


def _stretch_to_8bit(image: Image.Image) -> Image.Image:
    import numpy as np
    from PIL import Image

    values = np.asarray(image, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / max(high - low, 1e-6))
    return Image.fromarray(scaled.astype(np.uint8), "L")


def _to_arrays(image: Image.Image, source_size: tuple[int, int]) -> LoadedImage:
    import cv2  # type: ignore[import-not-found, unused-ignore]
    import numpy as np

    rgb = np.asarray(image)
    # cv2's conversion, as EasyOCR's own grey image comes from cv2.
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # Long side over long side: also right when EXIF orientation swapped width and height.
    scale = max(source_size) / max(rgb.shape[:2])
    return LoadedImage(rgb=rgb, grey=grey, source_size=source_size, scale=scale)
