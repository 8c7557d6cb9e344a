"""`pretrain_image(...)`: the ImageNet stand-in behind `avloc pretrain-image`.

Trains a ResNet-18 (torchvision layout, layer4 stride 2 like ImageNet's) to recognise the Tux Paint stamps
that never sound in the benchmark (`keras_avloc.data.stamps_pretrain`), then saves its weights as a
`.weights.h5` that `avloc train --init-image-weights` loads into any method's image backbone (the layer4
stride is not part of the weights, so LVS's stride-1 net takes them too).

Output next to `out_path`:
    <out>.weights.h5        the backbone weights (written atomically, last)
    <out>.json              what it was trained on and how well it recognises held-out images
    <out>.work/             the rendered images (images.npz) and the training backup, so a killed run resumes

Example:
>>> pretrain_image("runs/standin/resnet18_w16.weights.h5", ["cello", "frog"], width=16)  # doctest: +SKIP
"""

import json
import os

import numpy as np

from keras_avloc.io.files import atomic_output, write_json
from keras_avloc.training.train import TrainingError

PRETRAIN_AUGMENTATION = dict(crop_scale=(0.45, 1.0), crop_ratio=(3.0 / 4.0, 4.0 / 3.0), flip=True, brightness=0.3,
                             contrast=0.3, saturation=0.3, hue=0.04)
"""Random resized crops (45-100% of the side), flips and colour jitter, like ImageNet training."""


def _render_or_load(work_dir, key, sounding_classes, per_class, size, seed, workers, progress):
    from keras_avloc.data.stamps_pretrain import build_pretraining_set

    path = os.path.join(work_dir, "images.npz")
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                if json.loads(str(archive["key"])) == key:
                    return {"images": archive["images"], "labels": archive["labels"],
                            "classes": [str(c) for c in archive["classes"]]}
        except (OSError, ValueError, KeyError):
            pass  # a damaged or different cache is rebuilt
    data = build_pretraining_set(sounding_classes, per_class=per_class, size=size, seed=seed, workers=workers,
                                 progress=progress)
    with atomic_output(path, suffix=".npz") as temporary:
        np.savez(temporary, images=data["images"], labels=data["labels"], classes=np.array(data["classes"]),
                 key=np.array(json.dumps(key)))
    return data


def _classifier(width, classes, dtype):
    import keras

    from keras_avloc.backbones.encoders import resnet18_backbone

    backbone = resnet18_backbone(3, 2, "image_resnet18", dtype=dtype, width=width)
    inputs = keras.Input((None, None, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(backbone(inputs))
    logits = keras.layers.Dense(classes, name="classifier", dtype="float32")(pooled)
    return backbone, keras.Model(inputs, logits, name="standin_classifier")


def _dataset(images, labels, image_size, batch_size, training, seed):
    import tensorflow as tf

    from keras_avloc.data import augment as augment_lib
    from keras_avloc.io.imagenet import IMAGENET_MEAN, IMAGENET_STD

    augmentation = augment_lib.Augmentation(**PRETRAIN_AUGMENTATION)
    mean, std = tf.constant(IMAGENET_MEAN), tf.constant(IMAGENET_STD)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed).batch(2)

        def augment(sample, seed_pair):
            image, label = sample
            seed_pair = tf.cast(seed_pair % (2**31 - 1), tf.int32)
            first, second = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
            image = augment_lib.crop_and_flip(tf, tf.cast(image, tf.float32), image_size, augmentation, first)
            return augment_lib.colour_and_blur(tf, image, augmentation, second), label

        dataset = tf.data.Dataset.zip((dataset, seeds)).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(lambda image, label: (tf.image.resize(tf.cast(image, tf.float32), [image_size] * 2,
                                                                    antialias=True), label))
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = dataset.map(lambda image, label: ((image / 255.0 - mean) / std, label))
    return dataset.prefetch(tf.data.AUTOTUNE)


def pretrain_image(out_path, sounding_classes, width=16, image_size=112, per_class=16, render_size=128, epochs=12,
                   batch_size=64, learning_rate=2e-3, seed=0, mixed_precision=None, workers=None, verbose="auto",
                   progress=True):
    """Trains the ImageNet stand-in and writes `out_path` (a ResNet-18 `.weights.h5`).

    Args:
        out_path: weights file to write (must end in `.weights.h5`).
        sounding_classes: the benchmark's sounding classes (never shown; see `keras_avloc.data.stamps_pretrain`).
        width: ResNet-18 base width (the one of the models that will load the weights).
        image_size: training crop side (the benchmark's model input size).
        per_class: rendered images per stamp class (one more per class is held out to measure accuracy).
        render_size: side of the rendered images (crops are taken inside them).
        epochs, batch_size, learning_rate: Adam on softmax cross-entropy with a one-epoch warm-up.
        seed: rendering and training seed.
        mixed_precision: None or "bf16".
        workers: rendering processes (default: all cores).
        verbose: `model.fit` verbosity.
        progress: progress bars while rendering.

    Returns:
        the summary dict written to `<out>.json` ("classes", "images", "val_accuracy", settings, ...).
        A finished file with the same settings is not trained again.
    """
    import keras

    from keras_avloc.training.callbacks import TrainingState
    from keras_avloc.training.train import read_state, warmup_schedule

    out_path = os.fspath(out_path)
    if not out_path.endswith(".weights.h5"):
        raise TrainingError(f"{out_path}: the stand-in's output must end in .weights.h5 (a ResNet-18 weights file).")
    if int(epochs) < 1 or int(per_class) < 2 or int(batch_size) < 2 or int(width) < 1:
        raise TrainingError("pretrain-image: --epochs >= 1, --per-class >= 2, --batch-size >= 2 and --width >= 1 please.")
    summary_path = out_path[: -len(".weights.h5")] + ".json"
    work_dir = out_path[: -len(".weights.h5")] + ".work"
    key = {"sounding_classes": sorted(sounding_classes), "per_class": int(per_class) + 1,
           "render_size": int(render_size), "seed": int(seed)}
    settings = dict(key, width=int(width), image_size=int(image_size), epochs=int(epochs), batch_size=int(batch_size),
                    learning_rate=float(learning_rate), mixed_precision=mixed_precision)
    previous = read_state(summary_path)
    if previous and os.path.isfile(out_path):
        if previous.get("settings") == json.loads(json.dumps(settings)):
            print(f"{out_path} already trained with these settings; nothing to do (delete it to train again).")
            return previous
        raise TrainingError(f"{out_path} was trained with other settings ({summary_path}); pass another output "
                            "name or delete it first.")
    interrupted = read_state(os.path.join(work_dir, "train_state.json"))
    if interrupted and interrupted.get("settings") != json.loads(json.dumps(settings)):
        raise TrainingError(f"{work_dir} holds an interrupted stand-in training with other settings; re-run it with "
                            f"those settings ({os.path.join(work_dir, 'train_state.json')}), pass another output "
                            "name, or delete the folder.")
    os.makedirs(work_dir, exist_ok=True)
    data = _render_or_load(work_dir, key, sounding_classes, int(per_class) + 1, int(render_size), int(seed),
                           workers or os.cpu_count() or 1, progress)
    held_out = np.arange(len(data["labels"])) % (int(per_class) + 1) == int(per_class)  # one image per class
    images, labels = data["images"], data["labels"]
    classes = len(data["classes"])

    keras.utils.set_random_seed(int(seed))
    dtype = "mixed_bfloat16" if mixed_precision in ("bf16", "mixed_bfloat16") else None
    backbone, classifier = _classifier(int(width), classes, dtype)
    steps = max(1, int((~held_out).sum()) // int(batch_size))
    classifier.compile(optimizer=keras.optimizers.Adam(warmup_schedule(float(learning_rate), steps)),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"], jit_compile=False)
    train_data = _dataset(images[~held_out], labels[~held_out], int(image_size), int(batch_size), True, int(seed))
    val_data = _dataset(images[held_out], labels[held_out], int(image_size), int(batch_size), False, int(seed))
    state = TrainingState(os.path.join(work_dir, "train_state.json"), extra={"settings": settings})
    history = classifier.fit(train_data, epochs=int(epochs), validation_data=val_data, verbose=verbose, callbacks=[
        keras.callbacks.BackupAndRestore(os.path.join(work_dir, "backup"), double_checkpoint=True), state])
    accuracy = float(classifier.evaluate(val_data, verbose=0, return_dict=True)["accuracy"])
    with atomic_output(out_path, suffix=".weights.h5") as temporary:
        backbone.save_weights(temporary)
    summary = {"settings": settings, "classes": classes, "images": int((~held_out).sum()),
               "held_out_images": int(held_out.sum()), "val_accuracy": round(accuracy, 4),
               "train_accuracy": round(float(history.history["accuracy"][-1]), 4) if history.history else None,
               "weights": os.path.abspath(out_path), "stamps": data["classes"]}
    write_json(summary_path, summary, indent=1)
    return summary
