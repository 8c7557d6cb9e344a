"""Equirectangular panoramas: pixel <-> direction, and perspective (gnomonic) crops (official `utils/nfov.py`).

A crop is described as the official `NFOV` class does: a centre (cx, cy) in [0, 1]^2 of the panorama and a field
of view (fx, fy) in "NFOV units", where the output's screen point (sx, sy) in [0, 1)^2 sits at the tangent-plane
coordinates ((2 sx - 1) pi fx, (2 sy - 1) pi / 2 fy). The horizontal FOV of AVSA's crops is U[0.0707, 0.25] and the
vertical one follows from the aspect ratio.

Deviation: the official code rolls the panorama by an integer number of pixels to centre the crop's longitude
(`disp_x = int(...)`), which moves the crop by up to one panorama pixel; here the centre's longitude is added
exactly. The sampling grid, the wrap-around in longitude and the clamping in latitude are the official ones
(pixel i sits at coordinate i, as `_bilinear_interpolation`).

Official bug not reproduced: `_bilinear_interpolation` computes its weights from the neighbours *after* wrapping
and clamping them (x2 = (x0 + 1) mod W, y2 = min(y0 + 1, H - 1)), so in the panorama's last column (the seam)
and last row the weights turn negative; here they come from x0 + 1 and y0 + 1 before wrapping.
"""

import math

import numpy as np
from keras import ops


def equirect_to_direction(x, y):
    """Panorama point (x, y) in [0, 1] -> (azimuth phi, elevation nu) in radians (`video360.er2polar`):
    phi = (1 - 2x) pi (positive to the left of the centre column), nu = (1 - 2y) pi / 2 (positive up)."""
    return (1.0 - 2.0 * np.asarray(x, np.float64)) * math.pi, (1.0 - 2.0 * np.asarray(y, np.float64)) * math.pi / 2.0


def direction_to_equirect(phi, nu):
    """(azimuth, elevation) -> panorama point (x in [0, 1), y in [0, 1]); the inverse of `equirect_to_direction`."""
    x = np.mod((1.0 - np.asarray(phi, np.float64) / math.pi) / 2.0, 1.0)
    y = (1.0 - 2.0 * np.asarray(nu, np.float64) / math.pi) / 2.0
    return x, y


def unit_vector(phi, nu):
    """Direction vectors [..., 3] = (cos nu cos phi, cos nu sin phi, sin nu): x front, y left, z up."""
    phi, nu = np.asarray(phi, np.float64), np.asarray(nu, np.float64)
    return np.stack([np.cos(nu) * np.cos(phi), np.cos(nu) * np.sin(phi), np.sin(nu)], axis=-1)


def gnomonic_coordinates(center, fov, size):
    """Where each pixel of a perspective crop samples the panorama.

    Args:
        center: (cx, cy) of the crop's centre on the panorama, in [0, 1].
        fov: (fx, fy) field of view in NFOV units (horizontal, vertical).
        size: (height, width) of the crop.

    Returns:
        float64 [height, width, 2]: (u, v) panorama coordinates in [0, 1) x [0, 1] (u wraps around).
    """
    height, width = (int(side) for side in size)
    sx, sy = np.meshgrid(np.linspace(0.0, 1.0, width, endpoint=False), np.linspace(0.0, 1.0, height, endpoint=False))
    x = (2.0 * sx - 1.0) * math.pi * float(fov[0])
    y = (2.0 * sy - 1.0) * math.pi / 2.0 * float(fov[1])
    centre_lon = (2.0 * float(center[0]) - 1.0) * math.pi
    centre_lat = (2.0 * float(center[1]) - 1.0) * math.pi / 2.0
    rho = np.sqrt(x ** 2 + y ** 2)
    c = np.arctan(rho)
    sin_c, cos_c = np.sin(c), np.cos(c)
    rho = np.maximum(rho, 1e-4)  # as the official fix for the centre pixel (after c is taken)
    lat = np.arcsin(np.clip(cos_c * math.sin(centre_lat) + y * sin_c * math.cos(centre_lat) / rho, -1.0, 1.0))
    lon = np.arctan2(x * sin_c, rho * math.cos(centre_lat) * cos_c - y * math.sin(centre_lat) * sin_c)
    u = np.mod(((lon + centre_lon) / math.pi + 1.0) / 2.0, 1.0)
    v = (lat / (math.pi / 2.0) + 1.0) / 2.0
    return np.stack([u, v], axis=-1)


def crop_taps(center, fov, size, panorama_shape):
    """The bilinear taps of a perspective crop: for each crop pixel, four panorama pixels and their weights.

    Args:
        center, fov, size: see `gnomonic_coordinates`.
        panorama_shape: (H, W) of the equirectangular panorama.

    Returns:
        (int64 [4, height * width] flat panorama indices (row * W + column), float32 [4, height * width] weights).
    """
    coords = gnomonic_coordinates(center, fov, size)
    frame_height, frame_width = int(panorama_shape[0]), int(panorama_shape[1])
    uf = np.mod(coords[..., 0], 1.0) * frame_width
    vf = np.mod(coords[..., 1], 1.0) * frame_height
    x0, y0 = np.floor(uf).astype(np.int64), np.floor(vf).astype(np.int64)
    x2, y2 = np.mod(x0 + 1, frame_width), np.minimum(y0 + 1, frame_height - 1)
    y0 = np.minimum(y0, frame_height - 1)
    # weights from the unwrapped neighbours, as the official code (x0 + 1, y0 + 1 before wrapping / clamping)
    weights = np.stack([(x0 + 1 - uf) * (y0 + 1 - vf), (x0 + 1 - uf) * (vf - y0), (uf - x0) * (y0 + 1 - vf),
                        (uf - x0) * (vf - y0)]).reshape(4, -1)
    indices = np.stack([y0 * frame_width + x0, y2 * frame_width + x0, y0 * frame_width + x2,
                        y2 * frame_width + x2]).reshape(4, -1)
    return indices, weights.astype(np.float32)


def perspective_crops(frames, center, fov, size):
    """Perspective crops of a stack of panoramas at one viewpoint (numpy, for data pipelines).

    Args:
        frames: [F, H, W, C] equirectangular frames.
        center, fov, size: see `gnomonic_coordinates`.

    Returns:
        float32 [F, height, width, C].
    """
    frames = np.asarray(frames)
    count, height, width, channels = frames.shape
    indices, weights = crop_taps(center, fov, size, (height, width))
    flat = frames.reshape(count, height * width, channels)
    out = sum(flat[:, indices[k]].astype(np.float32) * weights[k][None, :, None] for k in range(4))
    return out.reshape(count, int(size[0]), int(size[1]), channels)


def perspective_crop(panorama, center, fov, size):
    """A perspective view of an equirectangular panorama, by bilinear sampling (TF ops: runs in a graph).

    Args:
        panorama: [H, W, C] image (any float or integer dtype).
        center, fov, size: see `gnomonic_coordinates`.

    Returns:
        float32 [height, width, C].

    Example:
    >>> crop = perspective_crop(panorama, center=(0.5, 0.5), fov=(0.25, 0.25), size=(112, 112))  # doctest: +SKIP
    """
    panorama = ops.cast(ops.convert_to_tensor(panorama), "float32")
    indices, weights = crop_taps(center, fov, size, (int(panorama.shape[0]), int(panorama.shape[1])))
    flat = ops.reshape(panorama, (int(panorama.shape[0]) * int(panorama.shape[1]), -1))
    out = sum(ops.take(flat, ops.convert_to_tensor(indices[k]), axis=0) * weights[k][:, None] for k in range(4))
    return ops.reshape(out, (int(size[0]), int(size[1]), -1))
