"""The tiny configuration of every registered method, shared by the tests that build each of them."""

TINY_BACKBONE = {"backbone_kwargs": {"width": 8}}
TINY_OPTIONS = {
    "lvs": TINY_BACKBONE, "ezvsl": {**TINY_BACKBONE, "embed_dim": 16},
    "avgn": {**TINY_BACKBONE, "embed_dim": 16, "num_classes": 3, "depth": 1},
    "csol": {**TINY_BACKBONE, "num_clusters": 3, "embed_dim": 8},
    "csolstage2": {**TINY_BACKBONE, "num_clusters": 3, "embed_dim": 8},
    "ier": {**TINY_BACKBONE, "num_clusters": 3, "embed_dim": 8, "step_hidden": (16, 8)},
    "ierstage2": {**TINY_BACKBONE, "num_clusters": 3, "embed_dim": 8, "step_hidden": (16, 8)},
    # DenseAV's in-graph augmentations draw random numbers and mix clips within each replica's batch: off here.
    "denseav": {**TINY_BACKBONE, "pretrain_steps": 0, "negative_audio": False, "extra_audio_masking": False,
                "quad_mixup": 0.0},
    "avc": {"width": 4, "crop_size": 32, "frames": 4}, "avsa": {"width": 4, "crop_size": 32, "frames": 4},
}
