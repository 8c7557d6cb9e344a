"""`InputSettings`: how a clip becomes a model's inputs, in one object.

`make_dataset`, training and evaluation share it: the audio front-end, the image side and geometry, the clip length
and level, the training crop and the image decoder. A trained model records the evaluation part in its
`eval_settings`, and `InputSettings.for_model(model)` reads it back.

Example:
>>> from keras_avloc.data import InputSettings, make_dataset
>>> inputs = InputSettings(frontend="lvs", image_size=160, clip_seconds=1.0, audio_level_db=-20.0)
>>> dataset = make_dataset("datasets/stamps", "test", inputs=inputs, batch_size=8)  # doctest: +SKIP
>>> dataset = make_dataset("datasets/stamps", "test", inputs=inputs, image_size=224)  # doctest: +SKIP
"""

import dataclasses

IMAGE_MODES = ("squash", "crop")
TRAIN_CROPS = ("random", "resized")
IMAGE_BACKENDS = ("pil", "cv2")


@dataclasses.dataclass(frozen=True)
class InputSettings:
    """How a clip becomes model inputs.

    Args:
        frontend: the audio front-end: "lvs", "csol", "avsa" (`keras_avloc.data.audio.get_frontend`), or a callable
            mapping float32 [B, T] waves to features.
        image_size: output side S of the square images.
        clip_seconds: audio clip length, centred in the file (EZ-VSL), tiled if shorter.
        image_mode: test-time geometry: "squash" (resize to S x S, EZ-VSL) or "crop" (short side to S, centre
            crop, LVS).
        train_crop: training crop: "random" (resize short side to 1.1 S, RandomCrop S; LVS / EZ-VSL) or "resized"
            (torchvision RandomResizedCrop(S), scale 0.08-1, ratio 3/4-4/3).
        image_backend: "pil" (PIL decode + bicubic resize, as the published torchvision pipelines) or "cv2" (OpenCV
            decode + area / cubic resize: several times faster, pixels differ slightly).
        audio_level_db: scale every clip to this gated RMS level (dBFS) before the front-end
            (`keras_avloc.data.audio.normalize_level`; after augmentation when training); None keeps the file's
            level, as the published pipelines do.

    Raises:
        ValueError: a value outside the choices above, naming the field.
    """

    frontend: object = "lvs"
    image_size: int = 224
    clip_seconds: float = 3.0
    image_mode: str = "squash"
    train_crop: str = "random"
    image_backend: str = "pil"
    audio_level_db: object = None

    def __post_init__(self):
        for field, value, choices in (("image_mode", self.image_mode, IMAGE_MODES),
                                      ("train_crop", self.train_crop, TRAIN_CROPS),
                                      ("image_backend", self.image_backend, IMAGE_BACKENDS)):
            if value not in choices:
                raise ValueError(f"{field} must be {' or '.join(repr(c) for c in choices)}, got {value!r}")
        if not (isinstance(self.frontend, str) or callable(self.frontend)):
            raise ValueError(f"frontend must be a front-end name or a callable on waves, got {self.frontend!r}")
        if int(self.image_size) < 1 or float(self.clip_seconds) <= 0:
            raise ValueError(f"image_size must be positive and clip_seconds above 0, got {self.image_size!r} and "
                             f"{self.clip_seconds!r}")

    @classmethod
    def fields(cls):
        """The names of the settings (the keyword arguments `make_dataset` also takes one by one)."""
        return tuple(field.name for field in dataclasses.fields(cls))

    def replace(self, **changes):
        """A copy with `changes` applied (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls, inputs=None, **changes):
        """`inputs` (default: the defaults) with `changes` applied; a front-end name or callable stands for
        `InputSettings(frontend=...)`."""
        if inputs is None:
            inputs = cls()
        elif isinstance(inputs, str) or (callable(inputs) and not isinstance(inputs, cls)):
            inputs = cls(frontend=inputs)
        elif not isinstance(inputs, cls):
            raise TypeError(f"inputs must be an InputSettings, got {type(inputs).__name__}")
        unknown = sorted(set(changes) - set(cls.fields()))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; the input settings are "
                            f"{', '.join(cls.fields())}")
        return inputs.replace(**changes) if changes else inputs

    @classmethod
    def for_model(cls, model, **changes):
        """The settings a trained model is evaluated with: its front-end and its `eval_settings` (image size, clip
        length, geometry, level), with `changes` applied."""
        settings = dict(getattr(model, "eval_settings", None) or {})
        inputs = cls(frontend=getattr(model, "frontend", None) or "lvs",
                     image_size=int(settings.get("image_size") or 224),
                     clip_seconds=float(settings.get("clip_seconds") or 3.0),
                     image_mode=settings.get("image_mode") or "squash",
                     audio_level_db=settings.get("audio_level_db"))
        return inputs.replace(**changes) if changes else inputs
