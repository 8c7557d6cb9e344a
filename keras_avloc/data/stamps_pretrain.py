"""The ImageNet stand-in's data: object recognition on Tux Paint stamps that never sound in a benchmark.

Every paper starts its image encoder from ImageNet weights, which cannot be downloaded here. The honest
stand-in (`avloc pretrain-image`) trains the same ResNet-18 to recognise objects, on images made like the
benchmark's scenes: each image shows one Tux Paint stamp (clip-art or photo cut-out; the stamp is the class)
at a random size, place and colour on a random *training* background of the stamps benchmark, with up to
two small stamps of other classes as clutter. Stamps of the benchmark's sounding classes are left out (by
class, and by any stamp whose name names one of them, e.g. `chicken_profile` for "chicken"), and so are the
letters, digits and other symbols. What it is not: ImageNet. About 500 mostly clip-art classes on a few
dozen backgrounds teach local object features, which is what the localisation methods need from the
initialisation, but nothing like ImageNet's breadth.

Everything random derives from (seed, class, image index), so a set is reproducible.
"""

import os
import re

import numpy as np

from keras_avloc.data import stamps as stamps_lib, stamps_compose, stamps_media
from keras_avloc.data import stamps_catalog as catalog

EXCLUDED_CATEGORIES = ("symbols",)
"""Top-level stamp folders that hold no objects (letters, digits, money, maths, chess symbols, ...)."""


def _name_tokens(path):
    return set(re.split(r"[_\-/\s]+", path.lower())) - {""}


def pretraining_stamps(sounding_classes, stamps_dir=None):
    """The stamps of the stand-in's classes: every stamp with alpha, except symbols and the benchmark's.

    Args:
        sounding_classes: the benchmark's sounding class names (their stamps are never used).
        stamps_dir: the Tux Paint stamps folder (default: the Debian package's).

    Returns:
        sorted stamp paths relative to `stamps_dir`, without extension.
    """
    from PIL import Image

    stamps_dir = stamps_dir or catalog.STAMPS_DIR
    sounding = {name.lower() for name in sounding_classes}
    banned = set()
    for name in sounding:
        banned |= set(name.split())
    for stamp, class_name in catalog.STAMPS:
        if class_name.lower() in sounding:
            banned |= _name_tokens(os.path.basename(stamp))
    excluded = {stamp for stamp, class_name in catalog.STAMPS if class_name.lower() in sounding}
    chosen = []
    for directory, _, names in os.walk(stamps_dir):
        for name in names:
            if not name.endswith(".png"):
                continue
            stamp = os.path.relpath(os.path.join(directory, name), stamps_dir)[: -len(".png")]
            if stamp.split(os.sep)[0] in EXCLUDED_CATEGORIES or stamp in excluded:
                continue
            if _name_tokens(os.path.basename(stamp)) & banned:
                continue
            try:
                with Image.open(os.path.join(stamps_dir, stamp + ".png")) as image:
                    if image.mode not in ("RGBA", "LA") and "transparency" not in image.info:
                        continue
                    if min(image.size) < 16:
                        continue
            except OSError:
                continue
            chosen.append(stamp)
    return sorted(chosen)


def _rgba_stamp(media, stamp):
    """Premultiplied RGBA of a stamp, converting palette / grey PNGs with transparency as PIL does."""
    key = ("rgba", stamp)
    if key not in media._stamps:
        from PIL import Image

        with Image.open(os.path.join(media.stamps_dir, stamp + ".png")) as image:
            rgba = np.asarray(image.convert("RGBA"), np.float32) / 255.0
        ys, xs = np.nonzero(rgba[..., 3] > 0.5)
        if len(ys) == 0:
            raise ValueError(f"{stamp}: the stamp is fully transparent")
        rgba = rgba[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
        rgba[..., :3] *= rgba[..., 3:4]
        media._stamps[key] = np.ascontiguousarray(rgba)
        media._stamps[stamp] = media._stamps[key]  # so stamps_compose helpers that call media.stamp() find it
    return media._stamps[key]


def render_image(media, stamp, others, background, size, rng):
    """One image: `stamp` (10-55% of the frame) over a background, with `others` as small clutter."""
    canvas = stamps_compose._render_background(media, background, size, rng)
    objects = list(others) + [stamp]  # the labelled object is drawn last, on top
    for position, name in enumerate(objects):
        _rgba_stamp(media, name)
        fraction = rng.uniform(0.10, 0.55) if position == len(objects) - 1 else rng.uniform(0.02, 0.08)
        width, height = stamps_compose._patch_size(media, name, size, fraction)
        patch = stamps_compose._prepare_object(media, name, (width, height), rng)
        x = int(rng.integers(0, size - width + 1))
        y = int(rng.integers(0, size - height + 1))
        canvas[y: y + height, x: x + width] = patch[..., :3] + canvas[y: y + height, x: x + width] * (1 - patch[..., 3:4])
    return np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)


def _render_task(task):
    stamps, backgrounds, size, seed, class_index, image_index = task
    media = _render_task.media
    rng = np.random.default_rng([int(seed), int(class_index), int(image_index), 11])
    clutter = int(rng.integers(0, 3))
    others = [stamps[int(i)] for i in rng.choice(len(stamps), size=clutter, replace=False) if int(i) != class_index]
    background = backgrounds[int(rng.integers(0, len(backgrounds)))]
    return render_image(media, stamps[class_index], others, background, size, rng)


def build_pretraining_set(sounding_classes, per_class=16, size=128, seed=0, workers=1, media_dir=None,
                          stamps_dir=None, progress=True):
    """Renders the stand-in's images.

    Args:
        sounding_classes: the benchmark's sounding classes (left out, see `pretraining_stamps`).
        per_class: images per stamp class.
        size: image side in pixels (training crops inside it).
        seed: everything random derives from it.
        workers: rendering processes.
        media_dir, stamps_dir: where the scratch backgrounds and the Tux Paint stamps are.
        progress: show a progress bar.

    Returns:
        dict with "images" uint8 [N, size, size, 3], "labels" int32 [N], "classes" (stamp paths) and
        "backgrounds" (the benchmark's training backgrounds used).
    """
    from tqdm.auto import tqdm

    stamps_dir, scratch = stamps_media.check_media(stamps_dir, media_dir)
    info = stamps_media.load_catalog(stamps_dir, media_dir)
    backgrounds = stamps_lib.split_backgrounds(info["backgrounds"], seed)["train"]
    stamps = pretraining_stamps(sounding_classes, stamps_dir)
    if len(stamps) < 10:
        raise stamps_media.StampsError(f"only {len(stamps)} stamps are left for the image stand-in; install the full "
                                     "tuxpaint-stamps-default package.")
    tasks = [(stamps, backgrounds, size, seed, c, i) for c in range(len(stamps)) for i in range(per_class)]
    images = np.zeros((len(tasks), size, size, 3), np.uint8)
    bar = tqdm(total=len(tasks), desc="stand-in images", unit="image", disable=not progress)

    def init():
        _render_task.media = stamps_media.MediaCache(stamps_dir, scratch)

    if workers > 1:
        import multiprocessing

        context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        with context.Pool(workers, initializer=init) as pool:
            for position, image in enumerate(pool.imap(_render_task, tasks, chunksize=32)):
                images[position] = image
                bar.update()
    else:
        init()
        for position, task in enumerate(tasks):
            images[position] = _render_task(task)
            bar.update()
    bar.close()
    labels = np.asarray([task[4] for task in tasks], np.int32)
    return {"images": images, "labels": labels, "classes": stamps, "backgrounds": backgrounds}
