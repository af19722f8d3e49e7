"""Plain 8-bit chips (PNG/JPEG): the form of most public SAR detection sets, display-ready and without georeference.

One reader for every path that takes them (``build``, ``ask``, ``serve``): the pixel cap is checked on the header
before decoding (PIL's decompression-bomb error becomes the same one-line refusal), and a 16-bit or float image
is refused rather than clipped to 8 bits by a silent conversion.
"""

from __future__ import annotations

import numpy as np

from ..text import one_line

NOT_8BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL modes a conversion to RGB would clip silently
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg")


class InputTooLarge(ValueError):
    """An input above a size cap (pixels, bytes, tiles): refused before the work it would cost."""


def read_plain(src, name: str, max_pixels: int) -> np.ndarray:
    """An 8-bit PNG/JPEG (a path or a file object) as ``uint8 [H, W]`` (L) or ``[H, W, 3]`` (RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(src) as im:
            if im.width * im.height > max_pixels:
                raise InputTooLarge(f"{name}: {im.width}x{im.height} pixels is above the cap of {max_pixels}")
            im.load()
            if im.mode in NOT_8BIT:
                raise ValueError(f"{name} is a {im.mode} image, not 8-bit; give the GeoTIFF (its radiometry is "
                                 f"scaled as in training) or an 8-bit PNG")
            return np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB"))
    except Image.DecompressionBombError:
        raise InputTooLarge(f"{name}: too many pixels (above the cap of {max_pixels})") from None
    except UnidentifiedImageError:
        raise ValueError(f"{name} is not a readable PNG/JPEG image") from None
    except OSError as err:
        raise ValueError(f"{name} is not a readable image ({one_line(err)})") from None


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """One 8-bit channel: a grey chip saved as RGB (three equal channels) gives its channel back exactly; a colour
    image its luminance (ITU-R 601, PIL's ``L``)."""
    if pixels.ndim == 2:
        return pixels
    if (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
        return pixels[..., 0].copy()
    from PIL import Image

    return np.asarray(Image.fromarray(pixels[..., :3]).convert("L"))
