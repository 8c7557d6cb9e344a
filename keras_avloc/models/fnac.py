"""FNAC (Sun, Zhang, Qin, Zhong, Wang: "Learning Audio-Visual Source Localization via False Negative Aware
Contrastive Learning", CVPR 2023): EZ-VSL's network and max-XMIL loss, plus three regularisers that keep a clip
whose sound or look resembles another clip's from being pushed away from it as a plain negative.

Follows the official code (OpenNLPLab/FNAC_AVL, `model.py` class `FNAC` and its loss; `train.py` for the weights and
the warm-up; `utils.py` for the optimiser):

* network: EZ-VSL's (`keras_avloc.models.ezvsl`), with dropout 0.9 on the image backbone's features before the 1 x 1
  projection (torch `nn.Dropout`, training only);
* with image features v [B, h, w, C] and audio vectors a [B, C], both L2-normalised along C, tau = 0.03:
  S[n, m, h, w] = <v_n(h, w), a_m> / tau; logits[n, m] = max over (h, w) of S[n, m]  (rows: images);
  L_cl = CE(logits, diag) + CE(logits^T, diag)  (EZ-VSL);
  A_aa = a a^T / tau; A_ii = vbar vbar^T / tau with vbar_n = the mean of v_n over (h, w) (not re-normalised);
  loc_n = minmax(S[n, n]) = (S - min) / (max - min + 1e-5); f_n = the mean over all (h, w) of v_n [loc_n > 0.6]
  (not re-normalised); A_ff = f f^T / tau;
  with softmax over each row and the mean over all B x B entries:
  FNS-1 = mean |softmax(A_aa) - softmax(logits)|, TNS = mean |softmax(A_aa) - softmax(A_ff)|,
  FNS-2 = mean |softmax(A_ii) - softmax(logits)|;
  loss = L_cl before `warmup_epochs` epochs, then L_cl + 100 FNS-1 + 100 TNS + 100 FNS-2. No stop-gradient anywhere
  (both sides of every L1 term are trained; only the 0.6 mask has no gradient).
* optimiser: Adam, lr 1e-4, weight decay 1e-4 coupled to the gradient (torch `Adam(weight_decay=...)`);
* localisation: as EZ-VSL (S[n, n] upsampled bilinearly with align_corners=True; OGL with alpha 0.4 as an option).

Official bugs and oddities not reproduced: resuming checks `latest.pth` but loads `best.pth` (`train.py`); the test
scripts lose their arguments (a missing line continuation); the audio frequency and time masks draw their start
along the wrong axis (`datasets.py`; this project's masks are its own augmentation); evaluation assumes batch 1.
Kept as in the code because they define the method: the unnormalised mean and foreground features, the foreground
mean over all h x w positions rather than over the mask, and the missing stop-gradients. The warm-up is `train.py`'s
default of 3 epochs (its shell scripts pass 5 for 30 epochs).
"""

import keras
from keras import ops

from keras_avloc.models.ezvsl import EZVSL, ezvsl_loss_terms

METHODS = {"fnac": "FNAC"}
"""The methods this module registers (read by `keras_avloc.models.registry` from the source)."""
__all__ = ["FNAC", "FNACWarmup", "fnac_loss_terms"]

HIGH_CONFIDENCE = 0.6
"""The official `high_conf_thresh`: a location is foreground where its min-max normalised score exceeds it."""


def _l1_of_row_softmaxes(first, second):
    return ops.mean(ops.abs(ops.softmax(first, axis=-1) - ops.softmax(second, axis=-1)))


def fnac_loss_terms(image_maps, audio_vecs, tau=0.03, term_weights=(100.0, 100.0, 100.0), high_confidence=HIGH_CONFIDENCE,
                    regularise=1.0):
    """Every term of the FNAC loss (see the module docstring for the formulas).

    Args:
        image_maps: raw image features [B, h, w, C] (normalised here along C).
        audio_vecs: raw audio vectors [B, C] (normalised here).
        tau: temperature (0.03).
        term_weights: the weights of FNS-1, TNS and FNS-2 (100 each).
        high_confidence: the foreground threshold on the min-max normalised own map (0.6).
        regularise: 1 adds the weighted regularisers to "loss", 0 leaves the contrastive loss alone (the warm-up); a
            scalar tensor is accepted (`FNAC` passes its warm-up gate).

    Returns:
        dict with "loss", "contrastive" (EZ-VSL's loss), "image_to_audio", "audio_to_image", "fns_audio" (FNS-1),
        "tns", "fns_image" (FNS-2) (the regularisers unweighted), "logits" [B, B] and "similarity" [B, h, w] (matched
        pairs, cosine).

    Example:
    >>> import numpy as np
    >>> terms = fnac_loss_terms(np.random.rand(4, 7, 7, 32), np.random.rand(4, 32))
    >>> sorted(terms)[:3]
    ['audio_to_image', 'contrastive', 'fns_audio']
    """
    ezvsl = ezvsl_loss_terms(image_maps, audio_vecs, tau=tau)  # the contrastive term, its logits, unit features
    logits, image_maps, audio_vecs = ezvsl["logits"], ezvsl["unit_image_maps"], ezvsl["unit_audio_vecs"]

    audio_affinity = ops.matmul(audio_vecs, ops.transpose(audio_vecs)) / tau
    image_mean = ops.mean(image_maps, axis=(1, 2))
    image_affinity = ops.matmul(image_mean, ops.transpose(image_mean)) / tau
    own = ops.einsum("bhwc,bc->bhw", image_maps, audio_vecs) / tau
    lowest = ops.min(own, axis=(1, 2), keepdims=True)
    highest = ops.max(own, axis=(1, 2), keepdims=True)
    located = (own - lowest) / (highest - lowest + 1e-5)
    mask = ops.cast(ops.greater(located, high_confidence), image_maps.dtype)
    foreground = ops.mean(image_maps * mask[..., None], axis=(1, 2))
    foreground_affinity = ops.matmul(foreground, ops.transpose(foreground)) / tau

    fns_audio = _l1_of_row_softmaxes(audio_affinity, logits)
    tns = _l1_of_row_softmaxes(audio_affinity, foreground_affinity)
    fns_image = _l1_of_row_softmaxes(image_affinity, logits)
    regularisers = term_weights[0] * fns_audio + term_weights[1] * tns + term_weights[2] * fns_image
    return {
        "loss": ezvsl["loss"] + ops.cast(regularise, "float32") * regularisers,
        "contrastive": ezvsl["loss"],
        "image_to_audio": ezvsl["image_to_audio"],
        "audio_to_image": ezvsl["audio_to_image"],
        "fns_audio": fns_audio,
        "tns": tns,
        "fns_image": fns_image,
        "logits": logits,
        "similarity": own * tau,
    }


class FNACWarmup(keras.callbacks.Callback):
    """Switches FNAC's regularisers off for its first `warmup_epochs` epochs (the official schedule) and on after.

    `avloc train` adds it (`FNAC.training_callbacks`); with a plain `model.fit`, pass it yourself, or the regularisers
    are on from the first epoch.

    Args:
        model: the `FNAC` model it drives (the callback reads its `warmup_epochs`).
    """

    def __init__(self, model):
        super().__init__()
        self.fnac = model

    def on_epoch_begin(self, epoch, logs=None):
        self.fnac.regularizer_gate.assign(0.0 if int(epoch) < self.fnac.warmup_epochs else 1.0)


@keras.saving.register_keras_serializable(package="keras_avloc")
class FNAC(EZVSL):
    """FNAC: EZ-VSL with the false-negative-aware regularisers.

    Args:
        embed_dim: projection size D (512).
        tau: temperature (0.03).
        term_weights: weights of FNS-1, TNS and FNS-2 (100, 100, 100: the official `--fnac_loss{1,2,3}_weight`).
        warmup_epochs: epochs trained on the contrastive loss alone before the regularisers join (3).
        high_confidence: foreground threshold of TNS (0.6).
        image_dropout: dropout on the image backbone's features in training (0.9).
        weight_decay: coupled L2 weight decay (1e-4).
        backbone_kwargs, image_layer4_stride, name: as `EZVSL`.
        **kwargs: `eval_settings` and `keras.Model` arguments such as `dtype`.

    Example:
    >>> model = FNAC()
    >>> model.compile()  # Adam(1e-4), coupled weight decay 1e-4
    >>> model.fit(train_ds, epochs=20, callbacks=[FNACWarmup(model)])  # doctest: +SKIP
    >>> heatmaps = model.localize(images, spectrograms, ogl_alpha=0.4)  # doctest: +SKIP
    """

    # Without dropout: its masks are drawn per replica, so the distributed check (one device against two replicas on
    # one batch) could not compare the runs; tests/test_fnac.py checks the dropout itself.
    tiny_config = {"backbone_kwargs": {"width": 8}, "embed_dim": 16, "image_dropout": 0.0}

    loss_term_names = ("loss", "contrastive", "fns_audio", "tns", "fns_image")
    default_learning_rate = 1e-4
    display_name = "FNAC"
    # In the demo: EZ-VSL's settings (12 epochs, layer4 stride 1 for 10 x 10 maps at 160 px, the demo's rate) and the
    # official 3-epoch warm-up; chosen on val: the regularisers at 25 (each is a mean over B x B probability
    # differences, at most 2 / B, so at the demo's batch of 32 a weight of 25 is the official 100 at its batch of 128;
    # at 100 the contrastive loss went back to chance once they joined, val AUC 0.256) and image dropout 0.5 (the
    # official 0.9 on the width-16 network's 128 channels stalled it at chance, val AUC 0.183; 0.0: 0.326, 0.5: 0.337;
    # docs/demo.md, "FNAC and SLAVC").
    demo_recipe = {"training": {"epochs": 12},
                   "settings": {"image_layer4_stride": 1, "image_dropout": 0.5, "term_weights": [25.0, 25.0, 25.0]},
                   "full_training": {"learning_rate": 1e-4}, "tiny_settings": {"embed_dim": 16}}

    def __init__(self, embed_dim=512, tau=0.03, term_weights=(100.0, 100.0, 100.0), warmup_epochs=3,
                 high_confidence=HIGH_CONFIDENCE, image_dropout=0.9, weight_decay=1e-4, backbone_kwargs=None,
                 image_layer4_stride=2, name="fnac", **kwargs):
        super().__init__(embed_dim=embed_dim, tau=tau, backbone_kwargs=backbone_kwargs,
                         image_layer4_stride=image_layer4_stride, image_dropout=image_dropout, name=name, **kwargs)
        self.term_weights = tuple(float(w) for w in term_weights)
        if len(self.term_weights) != 3:
            raise ValueError(f"FNAC: term_weights holds the weights of FNS-1, TNS and FNS-2 (three numbers), got "
                             f"{term_weights!r}.")
        self.warmup_epochs = int(warmup_epochs)
        self.high_confidence = float(high_confidence)
        self.weight_decay = float(weight_decay)
        # 1: regularisers on; `FNACWarmup` sets it per epoch. A variable, so a traced step reads its current value.
        self.regularizer_gate = self.add_weight(shape=(), initializer="ones", trainable=False, dtype="float32",
                                                name="regularizer_gate")

    def compute_loss_terms(self, image_maps, audio_vecs):
        return fnac_loss_terms(image_maps, audio_vecs, tau=self.tau, term_weights=self.term_weights,
                               high_confidence=self.high_confidence, regularise=self.regularizer_gate)

    def training_callbacks(self, dataset, feature_dataset, out_dir, seed=None):
        """The warm-up switch (`FNACWarmup`)."""
        return [FNACWarmup(self)]

    def get_config(self):
        config = super().get_config()
        config.update({"term_weights": list(self.term_weights), "warmup_epochs": self.warmup_epochs,
                       "high_confidence": self.high_confidence, "weight_decay": self.weight_decay})
        return config
