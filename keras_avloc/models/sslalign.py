"""SSL-Align (Senocak, Ryu, Kim, Oh, Pfister, Chung: "Sound Source Localization is All about Cross-Modal Alignment",
ICCV 2023): localisation trained jointly with cross-modal alignment, from several positive pairs per clip.

**Inference** follows the official code (kaistmm/SSLalignment `test.py`, `model_lvs.py`, `models_lvs/base_models.py`):
the released checkpoints hold LVS's network. Image: ResNet-18 with a stride-1 layer4 (14 x 14 maps at 224 px);
audio: ResNet-18 on the 1-channel log spectrogram, global max pool; no projection; both L2-normalised. The map is
the cosine similarity of the audio vector with every image location, min-max normalised after upsampling; the
official test binarises it with `>` at its median (`OFFICIAL_EVAL_SETTINGS`). Test inputs: the frame resized to
224 x 224 (bicubic), 3 s of audio (3.5 s to 6.5 s of the clip tiled to 10 s), LVS's spectrogram.

**Training.** The official training code is not released ("coming soon" in the repository's README), and the
paper's method section could not be read from this project's environment (only its abstract: "a cross-modal
alignment task as a joint task with sound source localization", positives from "hand-crafted" augmentation and
"semantically similar" samples). `sslalign_loss_terms` is therefore this project's reading of that description, each
open choice a parameter, defaults chosen on the stamps benchmark's val split (docs/methods/sslalign.md):

* views: the batch and `views - 1` augmented copies made inside the training step (`augment_views`: a random
  zoom-in crop of scale [0.6, 1], a horizontal flip, brightness and contrast jitter; on the spectrogram a time mask
  and a frequency mask of up to 20% each);
* semantic neighbours (off by default: they lowered val AUC): each clip's `neighbours` nearest clips of the batch
  under a frozen copy of the image encoder
  taken at the first training step (`neighbour_source="frozen"`: the pretrained encoder the model started from,
  as the paper's "NN w/ Sup. Pre. Enc." checkpoints use a pretrained encoder), or under the live image encoder
  without gradient ("live"), or none ("none"). The paper retrieves neighbours from the whole training set; this
  reading takes them from the batch (no second data pipeline). Neighbour pairs are positives both ways;
* localisation similarity s_L(v, a) = the max over locations of cos(v_xy, a) (`localization_pooling="max"`,
  EZ-VSL's multiple-instance max) or the softmax(cos / `pooling_tau`)-weighted mean of the cosines ("softmax");
* alignment similarity s_A(v, a) = cos(pool(v), a) with pool = the spatial mean (`alignment_pooling="mean"`) or
  the audio-attended mean, weights softmax(cos / `pooling_tau`) over locations ("attention");
* for every (image view, audio view) pair: a multi-positive InfoNCE over the batch in both directions (rows: images,
  columns: audio; the positives of a row are its own clip and its neighbours, each row's loss the mean of
  -log softmax over its positives), s / `tau`; the pairs' losses are averaged;
  loss = L_loc + `alignment_weight` x L_align.

Official bugs and oddities not reproduced: the test script's LVS branch builds `torch.eye(B)` on the GPU
unconditionally (`.cuda()`), so the released model cannot be evaluated on a CPU; its loader adds `module.` and
loads with `strict=False`, dropping every key it does not know without a word (here the unused keys are reported).
"""

import keras
from keras import ops

from keras_avloc.backbones import encoders
from keras_avloc.models.base import AVLocModel, split_inputs
from keras_avloc.models.losses_common import l2_normalize

METHODS = {"sslalign": "SSLAlign"}
"""The methods this module registers (read by `keras_avloc.models.registry` from the source)."""
__all__ = ["SSLAlign", "augment_views", "batch_neighbours", "sslalign_loss_terms"]

POOLINGS = {"localization": ("max", "softmax"), "alignment": ("mean", "attention")}
NEIGHBOUR_SOURCES = ("frozen", "live", "none")


def _log_softmax(logits, axis):
    return logits - ops.logsumexp(logits, axis=axis, keepdims=True)


def multi_positive_nce(logits, positives):
    """Symmetric multi-positive InfoNCE.

    Args:
        logits: [B, B] scores (rows: images, columns: audio), already divided by the temperature.
        positives: [B, B] 0 / 1 mask of the positive pairs (the diagonal included).

    Returns:
        (image_to_audio, audio_to_image): the mean over rows (columns) of the mean of -log softmax over the row's
        (column's) positives.
    """
    positives = ops.cast(positives, logits.dtype)
    rows = -ops.sum(positives * _log_softmax(logits, 1), axis=1) / ops.sum(positives, axis=1)
    columns = -ops.sum(positives * _log_softmax(logits, 0), axis=0) / ops.sum(positives, axis=0)
    return ops.mean(rows), ops.mean(columns)


def batch_neighbours(embeddings, count=1):
    """The positive-pair mask of a batch: each clip with itself and its `count` nearest other clips (cosine of
    `embeddings`), made symmetric.

    Args:
        embeddings: [B, D] features (normalised here).
        count: neighbours per clip (0: the diagonal only; at most B - 1 when the batch size is known).

    Returns:
        float32 [B, B] mask.
    """
    batch = ops.shape(embeddings)[0]
    eye = ops.eye(batch, dtype="float32")
    if not count:
        return eye
    if embeddings.shape[0] is not None:
        count = min(int(count), int(embeddings.shape[0]) - 1)  # a short last batch
        if count < 1:
            return eye
    unit = l2_normalize(ops.cast(ops.stop_gradient(embeddings), "float32"), axis=-1)
    similarity = ops.matmul(unit, ops.transpose(unit)) - 4.0 * eye  # never one's own neighbour
    _, nearest = ops.top_k(similarity, k=count)
    chosen = ops.sum(ops.one_hot(nearest, batch, dtype="float32"), axis=1)
    return ops.minimum(eye + ops.maximum(chosen, ops.transpose(chosen)), 1.0)


def _pooled_similarities(image_maps, audio_vecs, localization_pooling, alignment_pooling, pooling_tau):
    """s_L and s_A of every (image n, audio m) pair [B, B] from unit features."""
    batch = ops.shape(image_maps)[0]
    flat = ops.reshape(image_maps, (batch, -1, ops.shape(image_maps)[-1]))  # [B, P, C]
    cosines = ops.einsum("npc,mc->nmp", flat, audio_vecs)  # [B, B, P]
    needs_weights = localization_pooling == "softmax" or alignment_pooling == "attention"
    weights = ops.softmax(cosines / pooling_tau, axis=-1) if needs_weights else None
    if localization_pooling == "max":
        localization = ops.max(cosines, axis=-1)
    else:
        localization = ops.sum(weights * cosines, axis=-1)
    if alignment_pooling == "mean":
        alignment = ops.matmul(l2_normalize(ops.mean(flat, axis=1), axis=-1), ops.transpose(audio_vecs))
    else:
        attended = l2_normalize(ops.einsum("nmp,npc->nmc", weights, flat), axis=-1)  # [B, B, C]
        alignment = ops.einsum("nmc,mc->nm", attended, audio_vecs)
    return localization, alignment


def sslalign_loss_terms(image_views, audio_views, positives=None, tau=0.07, alignment_weight=1.0,
                        localization_pooling="max", alignment_pooling="mean", pooling_tau=0.03):
    """The SSL-Align objective as this project reads the paper (see the module docstring).

    Args:
        image_views: a list of raw image feature maps [B, h, w, C], one per view (normalised here).
        audio_views: a list of raw audio vectors [B, C], one per view (normalised here).
        positives: [B, B] positive-pair mask (`batch_neighbours`); None: the diagonal.
        tau: temperature of both contrastive terms (0.07).
        alignment_weight: the weight of the alignment term (1).
        localization_pooling: "max" or "softmax" (s_L).
        alignment_pooling: "mean" or "attention" (s_A).
        pooling_tau: temperature of the softmax weights over locations (0.03).

    Returns:
        dict with "loss", "localization", "alignment" (each the sum of both directions, averaged over the view
        pairs) and "logits" [B, B] (s_L / tau of the first views: rows images, columns audio).

    Example:
    >>> import numpy as np
    >>> terms = sslalign_loss_terms([np.random.rand(4, 7, 7, 32)], [np.random.rand(4, 32)])
    >>> sorted(terms)
    ['alignment', 'logits', 'localization', 'loss']
    """
    if localization_pooling not in POOLINGS["localization"] or alignment_pooling not in POOLINGS["alignment"]:
        raise ValueError(f"SSL-Align: localization_pooling must be one of {POOLINGS['localization']} and "
                         f"alignment_pooling one of {POOLINGS['alignment']}, got {localization_pooling!r}, "
                         f"{alignment_pooling!r}.")
    image_views = [l2_normalize(ops.cast(v, "float32"), axis=-1) for v in image_views]
    audio_views = [l2_normalize(ops.cast(a, "float32"), axis=-1) for a in audio_views]
    if positives is None:
        positives = ops.eye(ops.shape(image_views[0])[0], dtype="float32")
    localization, alignment, first_logits = [], [], None
    for image_maps in image_views:
        for audio_vecs in audio_views:
            s_l, s_a = _pooled_similarities(image_maps, audio_vecs, localization_pooling, alignment_pooling,
                                            pooling_tau)
            if first_logits is None:
                first_logits = s_l / tau
            localization.append(sum(multi_positive_nce(s_l / tau, positives)))
            alignment.append(sum(multi_positive_nce(s_a / tau, positives)))
    localization = ops.mean(ops.stack(localization))
    alignment = ops.mean(ops.stack(alignment))
    return {"loss": localization + alignment_weight * alignment, "localization": localization,
            "alignment": alignment, "logits": first_logits}


def augment_views(images, audio, seed_generator, crop_scale=(0.6, 1.0), jitter=0.2, mask_fraction=0.2):
    """One augmented view of a batch, drawn inside the graph (per clip).

    Args:
        images: [B, H, W, 3] ImageNet-normalised frames.
        audio: [B, F, T, 1] spectrograms.
        seed_generator: a `keras.random.SeedGenerator`.
        crop_scale: (lowest, highest) side of the zoom-in crop, as a fraction of the frame.
        jitter: brightness shift and contrast scale range (+-), in normalised units.
        mask_fraction: the largest time (frequency) mask, as a fraction of the spectrogram's frames (bins).

    Returns:
        (images, audio) of the same shapes.
    """
    batch = ops.shape(images)[0]
    height, width = ops.cast(ops.shape(images)[1], "float32"), ops.cast(ops.shape(images)[2], "float32")

    def uniform(low, high, shape=(batch,)):
        return keras.random.uniform(shape, low, high, seed=seed_generator)

    scale = uniform(*crop_scale)
    flip = ops.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0)
    shift_x = uniform(-1.0, 1.0) * (1.0 - scale) * (width - 1.0) / 2.0
    shift_y = uniform(-1.0, 1.0) * (1.0 - scale) * (height - 1.0) / 2.0
    center_x, center_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    zeros = ops.zeros_like(scale)
    # output (x, y) -> input (a0 x + a1 y + a2, b0 x + b1 y + b2): zoom about the centre, shift, mirror
    transform = ops.stack([flip * scale, zeros, center_x - flip * scale * center_x + shift_x,
                           zeros, scale, center_y - scale * center_y + shift_y, zeros, zeros], axis=1)
    views = ops.image.affine_transform(ops.cast(images, "float32"), transform, interpolation="bilinear",
                                       fill_mode="nearest", data_format="channels_last")
    contrast = 1.0 + uniform(-jitter, jitter)
    brightness = uniform(-jitter, jitter)
    views = views * contrast[:, None, None, None] + brightness[:, None, None, None]

    bins, frames = ops.shape(audio)[1], ops.shape(audio)[2]
    masks = []
    for length, axis in ((frames, 2), (bins, 1)):
        size = ops.cast(uniform(0.0, mask_fraction) * ops.cast(length, "float32"), "int32")
        start = ops.cast(uniform(0.0, 1.0) * ops.cast(length - size, "float32"), "int32")
        positions = ops.arange(length, dtype="int32")[None, :]
        keep = ops.logical_or(positions < start[:, None], positions >= (start + size)[:, None])
        shape = (batch, 1, length, 1) if axis == 2 else (batch, length, 1, 1)
        masks.append(ops.reshape(ops.cast(keep, "float32"), shape))
    audio_dtype = audio.dtype
    audio = ops.cast(audio, "float32")
    mean = ops.mean(audio, axis=(1, 2, 3), keepdims=True)  # masked cells take the clip's mean
    keep = masks[0] * masks[1]
    return ops.cast(views, images.dtype), ops.cast(audio * keep + mean * (1.0 - keep), audio_dtype)


@keras.saving.register_keras_serializable(package="keras_avloc")
class SSLAlign(AVLocModel):
    """SSL-Align model: LVS's network (the released checkpoints' layout) trained with localisation and alignment.

    Args:
        tau: temperature of the contrastive terms (0.07).
        alignment_weight: weight of the alignment term (1).
        views: views per clip in training, the batch itself included (2; 1 turns augmentation off).
        neighbours: in-batch semantic neighbours per clip used as extra positives in training (0, chosen on val;
            1 or more turns them on).
        neighbour_source: "frozen" (a copy of the image encoder taken at the first step), "live" or "none".
        localization_pooling: "max" or "softmax"; alignment_pooling: "mean" or "attention"; pooling_tau: 0.03.
        seed: seed of the in-graph augmentation.
        backbone_kwargs: extra keyword arguments for both ResNet-18s (e.g. `{"width": 16}`).
        name: model name.
        **kwargs: `eval_settings` and `keras.Model` arguments such as `dtype`.

    Example:
    >>> model = SSLAlign()
    >>> model.compile()  # Adam(1e-4)
    >>> model.fit(train_ds, epochs=20)  # doctest: +SKIP
    >>> heatmaps = model.localize(images, spectrograms)  # doctest: +SKIP
    """

    # One view: the augmentation draws per replica, so the distributed check (one device against two replicas on one
    # batch) could not compare the runs; tests/test_sslalign.py checks the views themselves.
    tiny_config = {"backbone_kwargs": {"width": 8}, "views": 1}

    loss_term_names = ("loss", "localization", "alignment")
    default_learning_rate = 1e-4
    display_name = "SSL-Align"
    # The defaults (two views, no neighbours) were chosen on the demo's val split (docs/demo.md, "SSL-Align").
    # Val AUC / pointing game / AUC on unseen recordings: 0.361 / 0.806 / 0.356 without neighbours; 0.339 / 0.788 /
    # 0.311 with the frozen stand-in's nearest clip as a positive; 0.345 / 0.781 / 0.340 with the live encoder's; one
    # view 0.364 / 0.769 / 0.356; no alignment term 0.344 / 0.838 / 0.329.
    demo_recipe = {"training": {"epochs": 12}, "full_training": {"learning_rate": 1e-4}, "tiny_settings": {"views": 1}}

    def __init__(self, tau=0.07, alignment_weight=1.0, views=2, neighbours=0, neighbour_source="frozen",
                 localization_pooling="max", alignment_pooling="mean", pooling_tau=0.03, seed=0, backbone_kwargs=None,
                 name="sslalign", **kwargs):
        super().__init__(name=name, **kwargs)
        if neighbour_source not in NEIGHBOUR_SOURCES:
            raise ValueError(f"SSL-Align: neighbour_source must be one of {NEIGHBOUR_SOURCES}, got "
                             f"{neighbour_source!r}.")
        if localization_pooling not in POOLINGS["localization"] or alignment_pooling not in POOLINGS["alignment"]:
            raise ValueError(f"SSL-Align: localization_pooling must be one of {POOLINGS['localization']} and "
                             f"alignment_pooling one of {POOLINGS['alignment']}, got {localization_pooling!r}, "
                             f"{alignment_pooling!r}.")
        if int(views) < 1 or int(neighbours) < 0:
            raise ValueError(f"SSL-Align: views must be >= 1 and neighbours >= 0, got {views!r}, {neighbours!r}.")
        self.tau = float(tau)
        self.alignment_weight = float(alignment_weight)
        self.views = int(views)
        self.neighbours = int(neighbours) if neighbour_source != "none" else 0
        self.neighbour_source = neighbour_source
        self.localization_pooling = localization_pooling
        self.alignment_pooling = alignment_pooling
        self.pooling_tau = float(pooling_tau)
        self.seed = int(seed)
        self.backbone_kwargs = dict(backbone_kwargs or {})
        dtype = self.dtype_policy
        networks = encoders.stride1_resnet18_networks(dtype, **self.backbone_kwargs)
        self.image_backbone, self.audio_backbone, self.audio_encoder = networks
        self.image_encoder = self.image_backbone
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="view_seed")
        self.prior_copied = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32",
                                            name="prior_copied")
        if self.neighbour_source == "frozen" and self.neighbours:  # built only when it will be used
            self.prior_image_encoder = encoders.resnet18_backbone(3, 1, "prior_image_resnet18", dtype=dtype,
                                                                  **self.backbone_kwargs)
            pairs = list(zip(self.image_backbone.weights, self.prior_image_encoder.weights))
            object.__setattr__(self, "_prior_pairs", pairs)  # existing variables, kept out of Keras' tracking
            for _, target in pairs:
                target.trainable = False

    OFFICIAL_EVAL_SETTINGS = {"image_size": 224, "clip_seconds": 3.0, "image_mode": "squash", "strict_median": True}
    """The official test settings (kaistmm/SSLalignment `test.py`, `datasets_lvs.py`, `utils.py`): the frame resized
    to 224 x 224, 3 s of audio from the clip's middle, the map binarised with `>` at its median."""

    # ----------------------------------------------------------------- training
    def copy_prior(self):
        """Copies the image encoder into the frozen neighbour encoder once (at the first training step, so that
        weights loaded after construction, e.g. `--init-image-weights`, are the ones copied)."""
        copied = ops.greater(self.prior_copied, 0.0)
        for base, target in self._prior_pairs:
            target.assign(ops.where(copied, target, ops.cast(base, target.dtype)))
        self.prior_copied.assign(1.0)

    def _neighbour_embeddings(self, images, image_maps):
        if self.neighbour_source == "live":
            return ops.mean(ops.stop_gradient(image_maps), axis=(1, 2))
        return ops.mean(ops.stop_gradient(self.prior_image_encoder(images, training=False)), axis=(1, 2))

    def compute_batch_terms(self, x, y, training):
        images, audio = split_inputs(x)
        if training and self.neighbours and self.neighbour_source == "frozen":
            self.copy_prior()  # before the forward pass updates the batch-norm statistics
        image_views, audio_views = [images], [audio]
        if training:
            for _ in range(self.views - 1):
                image_view, audio_view = augment_views(images, audio, self.seed_generator)
                image_views.append(image_view)
                audio_views.append(audio_view)
        batch = ops.shape(images)[0]
        features = self({"image": ops.concatenate(image_views, axis=0), "audio": ops.concatenate(audio_views, axis=0)},
                        training=training)
        tree = {"image_maps": [features["image_maps"][i * batch:(i + 1) * batch] for i in range(len(image_views))],
                "audio_vecs": [features["audio_vecs"][i * batch:(i + 1) * batch] for i in range(len(audio_views))]}
        if training and self.neighbours:
            tree["embeddings"] = self._neighbour_embeddings(images, tree["image_maps"][0])
        tree = self.global_batch(tree)
        positives = batch_neighbours(tree["embeddings"], self.neighbours) if "embeddings" in tree else None
        return self._terms(tree["image_maps"], tree["audio_vecs"], positives)

    def _terms(self, image_views, audio_views, positives):
        return sslalign_loss_terms(image_views, audio_views, positives, tau=self.tau,
                                   alignment_weight=self.alignment_weight,
                                   localization_pooling=self.localization_pooling,
                                   alignment_pooling=self.alignment_pooling, pooling_tau=self.pooling_tau)

    def compute_loss_terms(self, image_maps, audio_vecs):
        """The loss of one view without neighbours (the training step adds both; see `compute_batch_terms`).

        Args:
            image_maps: raw image features [B, h, w, C]; audio_vecs: raw audio vectors [B, C].

        Returns:
            dict as `sslalign_loss_terms`.
        """
        return self._terms([image_maps], [audio_vecs], None)

    # ----------------------------------------------------------------- official checkpoints
    def load_official_checkpoint(self, path, state=None):
        """Loads a released checkpoint (`ours_sup.pth.tar`, `ours_selfsup.pth.tar`, `ours_sup_previs.pth.tar` of
        kaistmm/SSLalignment): {"model_state_dict": {"imgnet.*", "audnet.*"}} (LVS's network; `module.` prefixes are
        accepted). The official loader uses `strict=False`; here every key the model has no place for is reported.

        Args:
            path: `.pth.tar` (needs torch) or an `.npz` of the state dict.
            state: its state dict when already read (`path` then only names it).

        Returns:
            dict {"image", "audio", "other"} of reports; "other" lists the keys outside `imgnet.` / `audnet.`.
        """
        from keras_avloc.backbones import load_torch_state_dict, read_state_dict
        from keras_avloc.backbones.porting import StateDictMismatchError, select_state_dict, unused_keys

        state = read_state_dict(path) if state is None else state
        flat = select_state_dict(state, "", source=str(path))
        missing = [prefix for prefix in ("imgnet.", "audnet.") if not any(key.startswith(prefix) for key in flat)]
        if missing:
            raise StateDictMismatchError(f"{path} is not an SSL-Align checkpoint: no keys start with "
                                         f"{', '.join(missing)} (expected the released ours_*.pth.tar layout).")
        report = {"image": load_torch_state_dict(self.image_backbone, state, prefix="imgnet."),
                  "audio": load_torch_state_dict(self.audio_backbone, state, prefix="audnet.")}
        report["other"] = {"loaded": 0, "ignored": unused_keys(flat, ("imgnet.", "audnet."),
                                                               "not part of the released inference network")}
        return report

    @classmethod
    def from_official_checkpoint(cls, path, **kwargs):
        """A complete SSL-Align model with a released checkpoint's weights and the official test settings, ready for
        `model.save("model.keras")`, `avloc evaluate` and `avloc localize`. The backbone width is read from the file.

        Args:
            path: the released `.pth.tar` (needs torch) or an `.npz` of its state dict.
            **kwargs: other constructor arguments.

        Returns:
            (model, report) with `report` as in `load_official_checkpoint`.
        """
        from keras_avloc.backbones.porting import official_model

        return official_model(cls, path, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update({"tau": self.tau, "alignment_weight": self.alignment_weight, "views": self.views,
                       "neighbours": self.neighbours, "neighbour_source": self.neighbour_source,
                       "localization_pooling": self.localization_pooling, "alignment_pooling": self.alignment_pooling,
                       "pooling_tau": self.pooling_tau, "seed": self.seed, "backbone_kwargs": self.backbone_kwargs})
        return config
