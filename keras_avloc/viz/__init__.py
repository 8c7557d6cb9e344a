"""Heatmap figures and overlay videos (matplotlib Agg, colour-blind-friendly colormaps)."""

from keras_avloc.viz.figures import (
    class_colour_figure,
    class_colour_overlay,
    four_panel_figure,
    heatmap_grid,
    normalize_heatmap,
    overlay_heatmap,
    per_source_figure,
    save_figure,
    sphere_figure,
    success_curve_figure,
    trimap_overlay,
)
from keras_avloc.viz.video import blend_frames, overlay_video_file, write_overlay_video

__all__ = [
    "blend_frames",
    "class_colour_figure",
    "class_colour_overlay",
    "four_panel_figure",
    "heatmap_grid",
    "normalize_heatmap",
    "overlay_heatmap",
    "overlay_video_file",
    "per_source_figure",
    "save_figure",
    "sphere_figure",
    "success_curve_figure",
    "trimap_overlay",
    "write_overlay_video",
]
