"""AVSA's viewpoints of a 360° clip: where the perspective crops look, and each crop's video and rotated sound field.

Sampling follows the official `datasets/preprocessing.py` (`SpatialVideoCropTool`): a viewpoint's centre is
(x, y) with x ~ U[0, 1) and y ~ U[0.33, 0.66] on the panorama; its horizontal FOV ~ U[0.0707, 0.25] (NFOV units)
and its aspect ratio log-uniform in [3/4, 4/3], the vertical FOV being aspect * hfov * (panorama width / height);
a clip's viewpoints stay apart: a new centre is redrawn until its distance, in (2x, y) with the panorama wrapped
around, to every earlier centre of the clip exceeds the margin (0.2). Each viewpoint gives the perspective crops of
the clip's frames (`keras_avloc.spatial.perspective_crop`) and the ambiX field rotated so that the viewpoint's
direction is the front (`keras_avloc.spatial.rotate_foa`, the official `audio_input: ambix`).

`crop_method="ambi_pow"` is the official tool's other sampler (`pos='ambi_pow'`, `utils/video360.py AmbiPower`): the
centre is drawn from a grid of step 0.1 over the whole panorama with probability proportional to the first-order
steered-response power of the clip's field towards it, raised to `alpha` (1): the audio says where to look, with no
label. The official tool draws one centre per call; here a clip's later centres are drawn the same way among the grid
points still `margin` away from the earlier ones.

`crop_method="objects"` centres viewpoints on the clip's objects, as the paper's pipeline centres them on detected
objects: each viewpoint looks at one object picked at random among those still `margin` away from the earlier
centres (sounding or silent alike, as a detector would find them); when none is left, the centre is drawn as
"random" draws it. On the synthetic benchmark the objects' directions come from its records: a perfect detector.
"""

import math

import numpy as np

from keras_avloc.spatial.ambisonics import power_map, rotate_foa
from keras_avloc.spatial.geometry import equirect_to_direction, perspective_crops

HFOV_LIMITS = (0.0707, 0.25)
ASPECT_LIMITS = (3.0 / 4.0, 4.0 / 3.0)
LATITUDE_LIMITS = (0.33, 0.66)
MARGIN = 0.2
VIEWPOINTS = 4
CROP_SIZE = (112, 112)
CROP_METHODS = ("random", "ambi_pow", "objects")
POWER_GRID_STEP = 0.1


def _apart(point, history, margin):
    """Whether panorama point(s) [..., 2] lie more than `margin` from every earlier centre in (2x, y), wrapped."""
    if not len(history):
        return np.ones(np.shape(point)[:-1], bool)
    scaled = np.asarray(point)[..., None, :] * [2.0, 1.0]
    earlier = np.asarray(history)[:, None, :] * [2.0, 1.0] + np.array([[0.0, 0.0], [2.0, 0.0], [-2.0, 0.0]])[None]
    distances = np.sqrt(((scaled[..., None, :] - earlier.reshape(-1, 2)) ** 2).sum(axis=-1))
    return distances.reshape(distances.shape[:-2] + (-1,)).min(axis=-1) > margin


def power_weights(foa, alpha=1.0, step=POWER_GRID_STEP):
    """The `ambi_pow` sampler's grid of panorama points [N, 2] and their weights [N] (power ** alpha, summing to 1)."""
    grid = np.array([(x, y) for x in np.arange(0.0, 1.0, step) for y in np.arange(0.0, 1.0, step)])
    power = power_map(foa, *equirect_to_direction(grid[:, 0], grid[:, 1])) ** float(alpha)
    if not np.isfinite(power).all() or power.sum() <= 1e-12:  # a silent field says nothing: every point alike
        power = np.ones(len(grid))
    return grid, power / power.sum()


def sample_viewpoints(rng, count=VIEWPOINTS, margin=MARGIN, panorama_aspect=2.0, max_tries=10000,
                      crop_method="random", foa=None, alpha=1.0, objects=None):
    """`count` viewpoints of one clip.

    Args:
        rng: a numpy Generator.
        count: viewpoints per clip (4).
        margin: least distance between two centres in (2x, y), across the seam too (0.2).
        panorama_aspect: the panorama's width / height (2 for equirectangular).
        max_tries: draws per viewpoint before giving up.
        crop_method: "random" (the official default), "ambi_pow" (centres drawn from the field's power map) or
            "objects" (centred on the clip's objects, then random).
        foa: [4, T] ambiX of the clip (needed by "ambi_pow").
        alpha: exponent of the power map ("ambi_pow", 1).
        objects: [N, 2] panorama points (x, y) of the clip's objects ("objects"; N may be 0).

    Returns:
        (centres float64 [count, 2] (x, y), fovs float64 [count, 2] (horizontal, vertical)).

    Raises:
        ValueError: `count` centres cannot be kept `margin` apart, or "ambi_pow" without `foa` (a silent field gives
            every grid point the same weight), or "objects" without `objects`.
    """
    if crop_method not in CROP_METHODS:
        raise ValueError(f"sample_viewpoints: crop_method must be one of {', '.join(CROP_METHODS)}, got "
                         f"{crop_method!r}.")
    if crop_method == "ambi_pow":
        if foa is None:
            raise ValueError("sample_viewpoints: crop_method 'ambi_pow' needs the clip's ambiX field (foa=...).")
        grid, weights = power_weights(foa, alpha)
    if crop_method == "objects":
        if objects is None:
            raise ValueError("sample_viewpoints: crop_method 'objects' needs the clip's object points (objects=...).")
        objects = np.reshape(np.asarray(objects, np.float64), (-1, 2))
    centres, fovs = [], []
    log_limits = (math.log(ASPECT_LIMITS[0]), math.log(ASPECT_LIMITS[1]))
    for _ in range(int(count)):
        if crop_method == "ambi_pow":
            allowed = weights * _apart(grid, centres, margin)
            if allowed.sum() <= 0:
                raise ValueError(f"sample_viewpoints: could not keep {count} centres {margin} apart.")
            centre = grid[rng.choice(len(grid), p=allowed / allowed.sum())]
        elif crop_method == "objects" and (candidates := [p for p in objects if _apart(p, centres, margin)]):
            centre = candidates[int(rng.integers(len(candidates)))]  # a chosen object is not apart from itself
        else:
            for _ in range(int(max_tries)):
                centre = np.array([rng.uniform(0.0, 1.0), rng.uniform(*LATITUDE_LIMITS)])
                if _apart(centre, centres, margin):
                    break
            else:
                raise ValueError(f"sample_viewpoints: could not keep {count} centres {margin} apart.")
        horizontal = rng.uniform(*HFOV_LIMITS)
        fovs.append([horizontal, math.exp(rng.uniform(*log_limits)) * horizontal * panorama_aspect])
        centres.append(centre)
    return np.array(centres), np.array(fovs)


def viewpoint_clip(frames, foa, centre, fov, size=CROP_SIZE):
    """One viewpoint of a clip: its perspective crops and the sound field as heard facing it.

    Args:
        frames: [F, H, W, 3] equirectangular frames.
        foa: [4, T] ambiX.
        centre, fov: a viewpoint from `sample_viewpoints`.
        size: crop (height, width) (112 x 112).

    Returns:
        (float32 [F, height, width, 3] crops, float64 [4, T] rotated ambiX).
    """
    crops = perspective_crops(frames, centre, fov, size)
    return crops, rotate_foa(foa, *equirect_to_direction(*centre))
