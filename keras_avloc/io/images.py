"""Image files: decoding JPEG / PNG frames and masks (with the decompression-bomb guard), writing them atomically.

Part of `keras_avloc.io.media` (which re-exports every name here).
"""

import os

import numpy as np

from keras_avloc.io.errors import MediaError
from keras_avloc.io.files import atomic_output, check_readable


LARGE_IMAGE_PIXELS = 4096 * 4096
"""Images with more pixels than this are decoded at reduced size when the caller needs fewer pixels.
Images beyond PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS` x 2, about 179 million
pixels) are refused with a `MediaError`."""


def open_image(source, min_side=None, name=None):
    """Decodes a JPEG/PNG into a fully loaded RGB `PIL.Image`; corrupt or truncated data raise `MediaError`.

    Args:
        source: a path, or the encoded bytes (e.g. from a TFRecord).
        min_side: the smallest side the caller will use (e.g. the model's input size). An image of more
            than `LARGE_IMAGE_PIXELS` pixels is then decoded at reduced size (JPEG DCT scaling, or a
            box-filter reduction for other formats) keeping its short side at least `2 * min_side`, so a
            10000 x 10000 photo costs megabytes, not gigabytes. Ordinary frames (up to 4K) are always
            decoded in full, exactly as the published pipelines do.
        name: how to call bytes input in messages.

    Returns:
        `PIL.Image.Image` in mode "RGB".
    """
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray, memoryview)):
        label, stream = name or "image bytes", io.BytesIO(bytes(source))
    else:
        label = stream = os.fspath(source)
        check_readable(label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large images are reduced below
            image = Image.open(stream)
        with image:
            width, height = image.size
            if min_side and width * height > LARGE_IMAGE_PIXELS:
                factor = max(1, min(width, height) // (2 * int(min_side)))
                if factor > 1:
                    image.draft("RGB", (max(1, width // factor), max(1, height // factor)))  # JPEG: scaled DCT
                    image.load()
                    if min(image.size) > 4 * int(min_side):  # not a JPEG (draft did nothing): reduce after decoding
                        image = image.reduce(max(1, min(image.size) // (2 * int(min_side))))
            image.load()  # forces a full decode: truncated JPEGs fail here
            return image.convert("RGB") if image.mode != "RGB" else image.copy()
    except Image.DecompressionBombError as err:
        raise MediaError(f"{label}: image too large to decode safely ({err}); resize it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MediaError(f"{label}: corrupt or truncated image ({err}); re-extract the frame") from err


def read_image(source, min_side=None, name=None):
    """`open_image` as an RGB uint8 array [H, W, 3] (see `open_image` for the arguments)."""
    return np.asarray(open_image(source, min_side, name), dtype=np.uint8)


def read_image_cv2(path):
    """RGB uint8 [H, W, 3] decoded by OpenCV (libjpeg-turbo; faster, pixels differ slightly from PIL).

    Raises:
        MediaError: missing, empty, truncated (no JPEG end-of-image marker) or undecodable file.
    """
    import cv2

    path = os.fspath(path)
    check_readable(path)
    data = np.fromfile(path, np.uint8)
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].tobytes():
        # libjpeg would decode a truncated JPEG into a half-grey frame without complaint.
        raise MediaError(f"{path}: truncated JPEG (no end-of-image marker); re-extract the frame")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{path}: corrupt or undecodable image; re-extract the frame")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path, size=None):
    """Reads an 8-bit mask PNG as bool [H, W] (pixel > 127 = object), optionally resized (nearest) to
    `size` x `size`.

    Raises:
        MediaError: missing, empty or undecodable file.
    """
    from PIL import Image

    grey = read_image(path)[..., 0]
    if size is not None and grey.shape != (size, size):
        grey = np.asarray(Image.fromarray(grey).resize((int(size), int(size)), Image.NEAREST))
    return grey > 127


def write_jpg(path, rgb, quality=95):
    """Writes an RGB uint8 [H, W, 3] image as JPEG, atomically.

    Args:
        path: output path (parent directories are created).
        rgb: uint8 array [H, W, 3] (a [H, W] greyscale array is also accepted).
        quality: JPEG quality 1..100.
    """
    import cv2

    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise MediaError(f"{path}: expected an RGB image [H, W, 3], got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise MediaError(f"{path}: JPEG encoding failed for an image of shape {rgb.shape}")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(encoded.tobytes())


def write_png(path, mask):
    """Writes a boolean mask [H, W] as an 8-bit PNG (255 = object), atomically."""
    import cv2

    ok, encoded = cv2.imencode(".png", np.where(np.asarray(mask), 255, 0).astype(np.uint8))
    if not ok:
        raise MediaError(f"{path}: PNG encoding failed for a mask of shape {np.shape(mask)}")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(encoded.tobytes())
