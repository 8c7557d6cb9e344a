"""Heatmap figures (matplotlib, Agg backend, colour-blind-friendly `viridis`).

Every function returns the matplotlib Figure and, given `path`, also writes it atomically (temporary
file renamed into place, `keras_avloc.io.files`), so an interrupted run never leaves a truncated PNG.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_avloc.io.files import atomic_output  # noqa: E402

DEFAULT_CMAP = "viridis"


def save_figure(figure, path, dpi=100):
    """Writes `figure` to `path` atomically (format from the extension, default PNG) and closes it."""
    extension = os.path.splitext(path)[1].lstrip(".") or "png"
    try:
        with atomic_output(path, suffix=f".{extension}") as temporary:
            figure.savefig(temporary, dpi=dpi, format=extension, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def _finish_panels(figure, axes, title, path):
    """Hides the axes, adds the title, lays out, and saves when a path is given."""
    for axis in axes:
        axis.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)


def _as_image(image):
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"image must be [H, W, 3] uint8 RGB, got shape {array.shape}.")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return array[..., :3]


def normalize_heatmap(heatmap, size=None):
    """Min-max normalises a 2-D map to [0, 1] (zeros if constant), optionally resized to `size` (h, w)."""
    import cv2

    array = np.asarray(heatmap, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"heatmap must be 2-D [h, w], got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError("heatmap contains NaN/inf values; fix the model output before plotting.")
    if size is not None and array.shape != tuple(size):
        array = cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def overlay_heatmap(image_uint8, heatmap, alpha=0.5, cmap=DEFAULT_CMAP):
    """Blends a colour-mapped heatmap onto an RGB image.

    Args:
        image_uint8: [H, W, 3] uint8 RGB.
        heatmap: [h, w] any scale (resized to the image, min-max normalised).
        alpha: heatmap opacity.
        cmap: matplotlib colormap name.

    Returns:
        uint8 [H, W, 3] RGB.
    """
    image = _as_image(image_uint8)
    normalized = normalize_heatmap(heatmap, image.shape[:2])
    coloured = (plt.get_cmap(cmap)(normalized)[..., :3] * 255.0).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * coloured
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def positive_region(heatmap, size, quantile=0.5):
    """Boolean mask of the strongly-positive region: normalised map >= its `quantile` (top half)."""
    normalized = normalize_heatmap(heatmap, size)
    flat = np.sort(normalized.ravel())
    return normalized >= flat[int(flat.size * quantile)]


def four_panel_figure(image_uint8, heatmap, path=None, title=None):
    """The standard four-panel view of one localisation.

    Panels: the original image; the full heatmap overlay; the strongly-positive heatmap (top 50%, the
    region the cIoU protocol counts as predicted); the clipped positive image (the image masked by that
    region, the rest greyed out).

    Args:
        image_uint8: [H, W, 3] uint8 RGB.
        heatmap: [h, w] any scale.
        path: optional output PNG path (written atomically).
        title: optional figure title (e.g. "cIoU 0.62").

    Returns:
        matplotlib Figure (closed if `path` was given).

    Example:
    >>> figure = four_panel_figure(np.zeros((64, 64, 3), np.uint8), np.random.rand(7, 7))
    """
    image = _as_image(image_uint8)
    size = image.shape[:2]
    normalized = normalize_heatmap(heatmap, size)
    positive = positive_region(heatmap, size)
    strong = np.where(positive, normalized, np.nan)
    clipped = np.where(positive[..., None], image, (image.astype(np.float32) * 0.15 + 40).astype(np.uint8))
    figure, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(overlay_heatmap(image, heatmap))
    axes[1].set_title("heatmap")
    axes[2].imshow(image, alpha=0.35)
    axes[2].imshow(strong, cmap=DEFAULT_CMAP, vmin=0.0, vmax=1.0)
    axes[2].set_title("strongly positive (top 50%)")
    axes[3].imshow(clipped)
    axes[3].set_title("clipped positive image")
    _finish_panels(figure, axes, title, path)
    return figure


def trimap_overlay(image_uint8, similarity, eps_p=0.65, eps_n=0.4, path=None, title=None):
    """LVS trimap: positive (sim > eps_p), uncertain (between) and background (sim < eps_n).

    Args:
        image_uint8: [H, W, 3] uint8 RGB.
        similarity: [h, w] similarity map on the scale the thresholds refer to (LVS: cosine in [-1, 1]).
        eps_p, eps_n: positive / negative thresholds (LVS defaults 0.65 / 0.4).
        path, title: as in `four_panel_figure`.

    Returns:
        (Figure, trimap) with trimap an int array [H, W]: 2 positive, 1 uncertain, 0 background.
    """
    import cv2

    image = _as_image(image_uint8)
    sim = np.asarray(similarity, dtype=np.float32)
    if not np.all(np.isfinite(sim)):
        raise ValueError("similarity contains NaN/inf values.")
    sim = cv2.resize(sim, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    trimap = np.where(sim > eps_p, 2, np.where(sim < eps_n, 0, 1)).astype(np.int64)
    palette = np.array([[68, 1, 84], [33, 145, 140], [253, 231, 37]], dtype=np.float32)  # viridis ends/mid
    blended = (0.5 * image.astype(np.float32) + 0.5 * palette[trimap]).astype(np.uint8)
    figure, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(blended)
    axes[1].set_title(f"trimap (pos > {eps_p:g}, neg < {eps_n:g})")
    _finish_panels(figure, axes, title, path)
    return figure, trimap


def per_source_figure(image_uint8, heatmaps, labels=None, path=None, title=None):
    """One overlay per map: per-source maps of a mixture, per-class maps, or DenseAV's per-head maps.

    Args:
        image_uint8: [H, W, 3] uint8 RGB.
        heatmaps: [K, h, w].
        labels: optional K panel titles (e.g. class names with their score).
    """
    image = _as_image(image_uint8)
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"heatmaps must be [K, h, w], got shape {maps.shape}.")
    labels = list(labels) if labels is not None else [f"map {k}" for k in range(len(maps))]
    figure, axes = plt.subplots(1, len(maps) + 1, figsize=(3 * (len(maps) + 1), 3.4))
    axes = np.atleast_1d(axes)
    axes[0].imshow(image)
    axes[0].set_title("image")
    for axis, heat, label in zip(axes[1:], maps, labels):
        axis.imshow(overlay_heatmap(image, heat))
        axis.set_title(str(label))
    _finish_panels(figure, axes, title, path)
    return figure


CLASS_COLOURS = np.array(
    [[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178], [213, 94, 0], [204, 121, 167],
     [120, 120, 120]], np.float32) / 255.0
"""The Okabe-Ito colour-blind-safe palette (cycled) of the class-colour figures."""


def class_colour_overlay(image_uint8, class_maps, colours=None, strength=0.75):
    """Each class map painted in its own colour over the image (opacity = the map's value).

    Args:
        image_uint8: [H, W, 3] uint8 RGB.
        class_maps: [K, h, w] maps in [0, 1] (e.g. CSOL's softmax class maps), resized to the image.
        colours: [K, 3] RGB in [0, 1]; default `CLASS_COLOURS` cycled.
        strength: the largest opacity.

    Returns:
        uint8 [H, W, 3]: at each pixel the class with the largest map wins the colour.
    """
    import cv2

    image = _as_image(image_uint8).astype(np.float32) / 255.0
    maps = np.clip(np.asarray(class_maps, np.float32), 0.0, 1.0)
    if maps.ndim != 3:
        raise ValueError(f"class_maps must be [K, h, w], got shape {maps.shape}.")
    height, width = image.shape[:2]
    maps = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps])
    colours = CLASS_COLOURS[np.arange(len(maps)) % len(CLASS_COLOURS)] if colours is None else np.asarray(colours)
    winner = np.argmax(maps, axis=0)
    alpha = strength * np.max(maps, axis=0)[..., None]
    blended = image * (1.0 - alpha) + colours[winner] * alpha
    return np.clip(np.round(blended * 255.0), 0, 255).astype(np.uint8)


def class_colour_figure(image_uint8, class_maps, names, silent_boxes=(), path=None, title=None):
    """The class-aware figure: each sounding class's map in its own colour, the silent objects marked.

    Args:
        image_uint8: [H, W, 3] uint8 RGB.
        class_maps: [K, h, w] maps in [0, 1] of the classes to show (the sounding ones).
        names: K legend labels.
        silent_boxes: [(name, [x1, y1, x2, y2] normalised), ...] of visible silent objects (dashed boxes).
    """
    from matplotlib.patches import Patch, Rectangle

    image = _as_image(image_uint8)
    height, width = image.shape[:2]
    figure, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(class_colour_overlay(image, class_maps))
    axes[1].set_title("class maps")
    for name, box in silent_boxes:
        x1, y1, x2, y2 = np.asarray(box, np.float64).reshape(4) * [width, height, width, height]
        for axis in axes:
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linestyle="--", linewidth=1.5,
                                     edgecolor="white"))
        axes[1].text(x1 + 2, y1 + 10, f"silent: {name}", color="white", fontsize=7)
    handles = [Patch(color=CLASS_COLOURS[k % len(CLASS_COLOURS)], label=str(name)) for k, name in enumerate(names)]
    if handles:
        axes[1].legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.7)
    _finish_panels(figure, axes, title, path)
    return figure


def success_curve_figure(curves, path=None, title="Success curve"):
    """Fraction of samples with cIoU >= t against t, one line per method (the AUC curve).

    Args:
        curves: dict name -> (thresholds [T], fraction [T], auc float).
    """
    figure, axis = plt.subplots(figsize=(5, 4))
    styles = ["-", "--", ":", "-."]
    colours = plt.get_cmap("cividis")(np.linspace(0.0, 0.85, max(len(curves), 1)))
    for index, (name, (thresholds, fraction, auc)) in enumerate(curves.items()):
        axis.plot(
            thresholds, fraction, styles[index % len(styles)], color=colours[index], marker="o", markersize=3,
            label=f"{name} (AUC {auc:.3f})",
        )
    axis.set_xlabel("cIoU threshold t")
    axis.set_ylabel("fraction of samples with cIoU ≥ t")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left", fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure


def heatmap_grid(images, heatmaps, scores, names=None, path=None, title=None, columns=4):
    """A grid of heatmap overlays, each titled with its name and score (e.g. best and worst cIoU).

    Args:
        images: list of [H, W, 3] uint8 RGB images (None → a grey placeholder).
        heatmaps: list of [h, w] maps.
        scores: list of floats shown as "cIoU x.xx".
        names: optional list of sample names.
    """
    count = len(heatmaps)
    if count == 0:
        raise ValueError("heatmap_grid needs at least one heatmap.")
    rows = int(np.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index >= count:
            continue
        heat = np.asarray(heatmaps[index], dtype=np.float32)
        image = images[index] if images is not None and images[index] is not None else None
        if image is None:
            image = np.full((224, 224, 3), 128, np.uint8)
        axis.imshow(overlay_heatmap(image, heat))
        label = f"cIoU {scores[index]:.2f}"
        if names is not None:
            label = f"{str(names[index])[:22]}\n{label}"
        axis.set_title(label, fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure


def sphere_figure(panorama_uint8, maps, directions=None, truth=None, path=None, title=None):
    """Panorama maps of where a sound comes from, one panel per map, with the estimated directions marked.

    Args:
        panorama_uint8: [H, W, 3] equirectangular frame.
        maps: {name: [H, W] panorama map} (e.g. the model's sweep map and the steered-response power).
        directions: optional {name: (x, y)} panorama coordinates in [0, 1] of each map's direction of arrival
            (a white cross).
        truth: optional (x, y) of the true direction (a green circle).
        path: save here (png / pdf / svg) when given.
        title: figure title.

    Returns:
        The matplotlib Figure.
    """
    image = _as_image(panorama_uint8)
    height, width = image.shape[:2]
    figure, axes = plt.subplots(len(maps), 1, figsize=(8, 4.2 * len(maps)), squeeze=False)
    for axis, (name, heatmap) in zip(axes[:, 0], maps.items()):
        axis.imshow(overlay_heatmap(image, heatmap))
        if truth is not None:
            axis.plot(truth[0] * width, truth[1] * height, "o", markersize=14, markerfacecolor="none",
                      markeredgecolor="lime", markeredgewidth=2)
        if directions and name in directions:
            x, y = directions[name]
            axis.plot(x * width, y * height, "x", markersize=12, color="white", markeredgewidth=3)
        axis.set_title(name)
    _finish_panels(figure, axes[:, 0], title, path)
    return figure
