"""The clustering stage of CSOL and IEr: object features under the sounding area, k-means, pseudo-labels.

At the end of every epoch after the warm-up, `CSOLClustering` gathers one object feature per training clip (the
backbone features under the dilated audio-visual mask, `object_features`), clusters them (`cluster_objects`,
scikit-learn's k-means++ on L2-normalised features), stores the dictionary in the model and trains its class heads
on the pseudo-labels. The model supplies the hooks (`clustering_features`, `align_clusters`, `after_clustering`,
`reset_class_heads`, `class_step`); facts and constants from GeWu-Lab/CSOL_TPAMI2021 (see `keras_avloc.models.csol`).
"""

import os

import keras
import numpy as np
from keras import ops

DEFAULT_CLUSTERS = 11
MASK_THRESHOLD = 0.05


def dilate_mask(mask):
    """The official 4-neighbour dilation: a cell on and *not on the border* also switches on its 4 neighbours.

    Args:
        mask: [B, h, w] of 0 / 1.

    Returns:
        float32 [B, h, w] of 0 / 1.
    """
    mask = ops.cast(mask, "float32")
    height, width = int(mask.shape[1]), int(mask.shape[2])
    interior = ops.pad(mask[:, 1:-1, 1:-1], [[0, 0], [1, 1], [1, 1]]) if height > 2 and width > 2 else ops.zeros_like(mask)
    up = ops.pad(interior[:, 1:], [[0, 0], [0, 1], [0, 0]])
    down = ops.pad(interior[:, :-1], [[0, 0], [1, 0], [0, 0]])
    left = ops.pad(interior[:, :, 1:], [[0, 0], [0, 0], [0, 1]])
    right = ops.pad(interior[:, :, :-1], [[0, 0], [0, 0], [1, 0]])
    return ops.minimum(mask + up + down + left + right, 1.0)


def object_features(backbone_maps, av_map, threshold=MASK_THRESHOLD):
    """Object features: mean over all h x w cells of v_fea times the dilated mask (av_map > threshold).

    Args:
        backbone_maps: v_fea [B, h, w, C]; av_map: sigmoid map [B, h, w]; threshold: 0.05.

    Returns:
        float32 [B, C] (the masked sum divided by h * w, as the official `extract_feature`).
    """
    mask = dilate_mask(ops.cast(av_map > threshold, "float32"))
    return ops.mean(ops.cast(backbone_maps, "float32") * mask[..., None], axis=(1, 2))


def cluster_objects(features, num_clusters=DEFAULT_CLUSTERS, seed=0, n_init=10):
    """Pseudo-labels and the object dictionary from object features (scikit-learn k-means).

    Args:
        features: [N, C] unnormalised object features.
        num_clusters: K.
        seed: k-means random state.
        n_init: k-means++ restarts (the best inertia wins).

    Returns:
        (labels int [N], dictionary float32 [K, C] = per-cluster mean of the *unnormalised* features,
        sizes int [K]). A cluster k-means leaves empty keeps a zero row.
    """
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    features = np.asarray(features, np.float64)
    if len(features) < num_clusters:
        raise ValueError(f"CSOL clustering needs at least K = {num_clusters} clips, got {len(features)}; "
                         "use more training clips or a smaller num_clusters.")
    kmeans = KMeans(n_clusters=int(num_clusters), init="k-means++", n_init=int(n_init), random_state=int(seed))
    labels = kmeans.fit_predict(normalize(features, norm="l2"))
    sizes = np.bincount(labels, minlength=num_clusters)
    dictionary = np.zeros([num_clusters, features.shape[1]], np.float32)
    for k in range(num_clusters):
        if sizes[k]:
            dictionary[k] = features[labels == k].mean(axis=0)
    return labels.astype(np.int32), dictionary, sizes


class CSOLClustering(keras.callbacks.Callback):
    """End of every epoch after the warm-up: object features -> k-means -> dictionary -> class-head passes.

    Writes `out_dir/dictionary.npz` (dictionary, pseudo-labels by clip index, cluster sizes, epoch, NMI
    against the true classes when the split has them) and adds `cluster_nmi`, `class_loss`,
    `image_class_accuracy`, `audio_class_accuracy` to the epoch logs (NaN in warm-up epochs).

    Args:
        dataset: the training dataset (x, y) with y["index"] (`keras_avloc.data.make_dataset`).
        feature_dataset: the training split in order without augmentation (default: `dataset`).
        out_dir: where dictionary.npz goes (None: not written).
        seed: k-means and head-initialisation seed (offset by the epoch).
        progress: tqdm bars for the feature and classification passes.
    """

    LOG_KEYS = ("cluster_nmi", "class_loss", "image_class_accuracy", "audio_class_accuracy")

    def __init__(self, dataset, feature_dataset=None, out_dir=None, seed=0, progress=True):
        super().__init__()
        self.dataset = dataset
        self.feature_dataset = feature_dataset if feature_dataset is not None else dataset
        self.out_dir = out_dir
        self.seed = int(seed)
        self.progress = progress
        self._feature_fn = self._class_fn = None
        self._table = None

    def _functions(self, model):
        import tensorflow as tf

        if self._feature_fn is None:
            self._feature_fn = tf.function(model.clustering_features)

            def step(x, index, options):
                labels = tf.gather(self._table, tf.clip_by_value(index, 0, tf.shape(self._table)[0] - 1))
                labels = tf.where((index >= 0) & (index < tf.shape(self._table)[0]), labels, -1)
                return model.class_step(x, labels, **options)

            self._class_fn = tf.function(step)
        return self._feature_fn, self._class_fn

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tqdm.auto import tqdm

        logs = logs if logs is not None else {}
        model = self.model
        for key in self.LOG_KEYS + tuple(model.clustering_log_keys) + tuple(model.class_step_terms):
            logs[key] = float("nan")
        if epoch + 1 <= model.warmup_epochs:
            return
        features_fn, class_fn = self._functions(model)
        parts, indices, true_labels = {}, [], []
        for x, y in tqdm(self.feature_dataset, desc=f"{model.name}: clip features", unit="batch", leave=False,
                         disable=not self.progress):
            for key, value in features_fn(x["image"], x["audio"]).items():
                parts.setdefault(key, []).append(value.numpy())
            indices.append(np.asarray(y["index"]).reshape(-1))
            true_labels.append(np.asarray(y["label"]).reshape(-1))
        parts = {key: np.concatenate(value) for key, value in parts.items()}
        features, indices, true_labels = parts["object"], np.concatenate(indices), np.concatenate(true_labels)
        labels, dictionary, sizes = model.align_clusters(*cluster_objects(
            features, model.num_clusters, seed=self.seed + epoch, n_init=model.kmeans_restarts))
        known = true_labels >= 0
        nmi = float("nan")
        if known.any():
            from sklearn.metrics import normalized_mutual_info_score

            nmi = float(normalized_mutual_info_score(true_labels[known], labels[known]))
        model.dictionary.assign(dictionary)
        model.clusterings.assign_add(1.0)
        table = np.full(int(indices.max()) + 1, -1, np.int32)
        table[indices] = labels
        if self._table is None or int(self._table.shape[0]) != len(table):
            self._table = tf.Variable(table, trainable=False, dtype=tf.int32)
            self._feature_fn = None  # the step closes over the table: retrace with the new one
            features_fn, class_fn = self._functions(model)
        else:
            self._table.assign(table)
        if self.out_dir:
            from keras_avloc.io.files import write_npz

            write_npz(os.path.join(self.out_dir, "dictionary.npz"), dictionary=dictionary, pseudo_labels=table,
                      cluster_sizes=sizes, epoch=np.int32(epoch + 1), nmi=np.float32(nmi))
        logs.update(model.after_clustering(labels, parts, epoch))
        model.reset_class_heads(self.seed + epoch)
        totals = {key: 0.0 for key in self.LOG_KEYS[1:] + tuple(model.class_step_terms)}
        steps = 0
        rng = np.random.default_rng([self.seed, epoch, 11])
        for _ in range(model.class_passes):
            for x, y in tqdm(self.dataset, desc=f"{model.name}: class heads", unit="batch", leave=False,
                             disable=not self.progress):
                terms = class_fn(x, tf.cast(tf.reshape(y["index"], [-1]), tf.int32), model.class_step_options(rng))
                for key in totals:
                    totals[key] += float(terms[key])
                steps += 1
        logs["cluster_nmi"] = nmi
        for key in totals:
            logs[key] = totals[key] / max(steps, 1)
        print(f"{model.name} clustering (epoch {epoch + 1}): cluster sizes {sizes.tolist()}, NMI {nmi:.3f}, class loss "
              f"{logs['class_loss']:.3f}, image / audio accuracy {logs['image_class_accuracy']:.3f} / "
              f"{logs['audio_class_accuracy']:.3f}")
