"""AVSA's viewpoints of a 360° clip: where the perspective crops look, and each crop's video and rotated sound field.

Sampling follows the official `datasets/preprocessing.py` (`SpatialVideoCropTool`): a viewpoint's centre is
(x, y) with x ~ U[0, 1) and y ~ U[0.33, 0.66] on the panorama; its horizontal FOV ~ U[0.0707, 0.25] (NFOV units)
and its aspect ratio log-uniform in [3/4, 4/3], the vertical FOV being aspect * hfov * (panorama width / height);
a clip's viewpoints stay apart: a new centre is redrawn until its distance, in (2x, y) with the panorama wrapped
around, to every earlier centre of the clip exceeds the margin (0.2). Each viewpoint gives the perspective crops of
the clip's frames (`keras_avloc.spatial.perspective_crop`) and the ambiX field rotated so that the viewpoint's
direction is the front (`keras_avloc.spatial.rotate_foa`, the official `audio_input: ambix`).
"""

import math

import numpy as np

from keras_avloc.spatial.ambisonics import rotate_foa
from keras_avloc.spatial.geometry import equirect_to_direction, perspective_crops

HFOV_LIMITS = (0.0707, 0.25)
ASPECT_LIMITS = (3.0 / 4.0, 4.0 / 3.0)
LATITUDE_LIMITS = (0.33, 0.66)
MARGIN = 0.2
VIEWPOINTS = 4
CROP_SIZE = (112, 112)


def sample_viewpoints(rng, count=VIEWPOINTS, margin=MARGIN, panorama_aspect=2.0, max_tries=10000):
    """`count` viewpoints of one clip.

    Args:
        rng: a numpy Generator.
        count: viewpoints per clip (4).
        margin: least distance between two centres in (2x, y), across the seam too (0.2).
        panorama_aspect: the panorama's width / height (2 for equirectangular).
        max_tries: draws per viewpoint before giving up.

    Returns:
        (centres float64 [count, 2] (x, y), fovs float64 [count, 2] (horizontal, vertical)).

    Raises:
        ValueError: `count` centres cannot be kept `margin` apart.
    """
    centres, fovs, history = [], [], np.zeros((0, 2))
    log_limits = (math.log(ASPECT_LIMITS[0]), math.log(ASPECT_LIMITS[1]))
    for _ in range(int(count)):
        for _ in range(int(max_tries)):
            centre = np.array([rng.uniform(0.0, 1.0), rng.uniform(*LATITUDE_LIMITS)])
            scaled = centre * [2.0, 1.0]
            if not len(history) or np.sqrt(((scaled - history) ** 2).sum(axis=1)).min() > margin:
                history = np.concatenate([history, scaled[None], scaled[None] + [2.0, 0.0], scaled[None] - [2.0, 0.0]])
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
