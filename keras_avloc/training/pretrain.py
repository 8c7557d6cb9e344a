"""The stand-ins for pretrained encoders: `pretrain_image` (the ImageNet stand-in, `avloc pretrain-image`) and
`pretrain_audio` (the speech stand-in, `avloc pretrain-audio`).

The image stand-in trains a ResNet-18 (torchvision layout, layer4 stride 2 like ImageNet's) to recognise the Tux
Paint stamps that never sound in the benchmark (`keras_avloc.data.stamps_pretrain`), then saves its weights as a
`.weights.h5` that `avloc train --init-image-weights` loads into any method's image backbone (the layer4
stride is not part of the weights, so LVS's stride-1 net takes them too). The speech stand-in trains DenseAV's
spectrogram CNN to tell apart spoken words that never name a benchmark object
(`keras_avloc.data.speech_pretrain`); `avloc train --init-audio-weights` loads it.

Output next to `out_path`:
    <out>.weights.h5        the backbone weights (written atomically, last)
    <out>.json              what it was trained on and how well it recognises held-out images or renderings
    <out>.work/             the rendered data (.npz) and the training backup, so a killed run resumes

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


def _cached(path, key, build):
    """The arrays of `build()` (a dict of arrays and string lists), kept in the .npz `path` under `key`: a cache
    made with the same key is read back instead of building again."""
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                if json.loads(str(archive["key"])) == key:
                    arrays = {name: archive[name] for name in archive.files if name != "key"}  # each read once
                    return {name: [str(v) for v in array] if array.dtype.kind == "U" else array
                            for name, array in arrays.items()}
        except (OSError, ValueError, KeyError):
            pass  # a damaged or different cache is rebuilt
    data = build()
    with atomic_output(path, suffix=".npz") as temporary:
        np.savez(temporary, key=np.array(json.dumps(key)), **{name: np.asarray(value) for name, value in data.items()})
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

    if int(epochs) < 1 or int(per_class) < 2 or int(batch_size) < 2 or int(width) < 1:
        raise TrainingError("pretrain-image: --epochs >= 1, --per-class >= 2, --batch-size >= 2 and --width >= 1 please.")
    key = {"sounding_classes": sorted(sounding_classes), "per_class": int(per_class) + 1,
           "render_size": int(render_size), "seed": int(seed)}
    settings = dict(key, width=int(width), image_size=int(image_size), epochs=int(epochs), batch_size=int(batch_size),
                    learning_rate=float(learning_rate), mixed_precision=mixed_precision)
    out_path, work_dir, previous = _start(out_path, settings, "a ResNet-18 weights file")
    if previous:
        return previous
    from keras_avloc.data.stamps_pretrain import build_pretraining_set

    data = _cached(os.path.join(work_dir, "images.npz"), key, lambda: build_pretraining_set(
        sounding_classes, per_class=int(per_class) + 1, size=int(render_size), seed=int(seed),
        workers=workers or os.cpu_count() or 1, progress=progress))
    held_out = np.arange(len(data["labels"])) % (int(per_class) + 1) == int(per_class)  # one image per class
    images, labels = data["images"], data["labels"]
    keras.utils.set_random_seed(int(seed))
    backbone, classifier = _classifier(int(width), len(data["classes"]), _dtype(mixed_precision))
    train_data = _dataset(images[~held_out], labels[~held_out], int(image_size), int(batch_size), True, int(seed))
    val_data = _dataset(images[held_out], labels[held_out], int(image_size), int(batch_size), False, int(seed))
    summary = {"settings": settings, "classes": len(data["classes"]), "images": int((~held_out).sum()),
               "held_out_images": int(held_out.sum())}
    summary.update(_fit_and_save(backbone, classifier, train_data, val_data, summary["images"], settings, out_path,
                                 work_dir, verbose), stamps=data["classes"])
    return _write_summary(out_path, summary)


def _dtype(mixed_precision):
    return "mixed_bfloat16" if mixed_precision in ("bf16", "mixed_bfloat16") else None


def _start(out_path, settings, what):
    """Checks the output and any earlier run: (out_path, work_dir, the finished run's summary or None).

    Raises:
        TrainingError: a wrong file name, a finished or interrupted run with other settings.
    """
    from keras_avloc.training.train import read_state

    out_path = os.fspath(out_path)
    if not out_path.endswith(".weights.h5"):
        raise TrainingError(f"{out_path}: the stand-in's output must end in .weights.h5 ({what}).")
    summary_path = out_path[: -len(".weights.h5")] + ".json"
    work_dir = out_path[: -len(".weights.h5")] + ".work"
    previous = read_state(summary_path)
    if previous and os.path.isfile(out_path):
        if previous.get("settings") == json.loads(json.dumps(settings)):
            print(f"{out_path} already trained with these settings; nothing to do (delete it to train again).")
            return out_path, work_dir, previous
        raise TrainingError(f"{out_path} was trained with other settings ({summary_path}); pass another output "
                            "name or delete it first.")
    interrupted = read_state(os.path.join(work_dir, "train_state.json"))
    if interrupted and interrupted.get("settings") != json.loads(json.dumps(settings)):
        raise TrainingError(f"{work_dir} holds an interrupted stand-in training with other settings; re-run it with "
                            f"those settings ({os.path.join(work_dir, 'train_state.json')}), pass another output "
                            "name, or delete the folder.")
    os.makedirs(work_dir, exist_ok=True)
    return out_path, work_dir, None


def _fit_and_save(backbone, classifier, train_data, val_data, examples, settings, out_path, work_dir, verbose):
    """Adam with a one-epoch warm-up on softmax cross-entropy, resumable (a backup in `work_dir`); writes the
    backbone's weights to `out_path` atomically. Returns the accuracies and the weights' path."""
    import keras

    from keras_avloc.training.callbacks import TrainingState
    from keras_avloc.training.train import warmup_schedule

    steps = max(1, int(examples) // int(settings["batch_size"]))
    classifier.compile(optimizer=keras.optimizers.Adam(warmup_schedule(float(settings["learning_rate"]), steps)),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"], jit_compile=False)
    state = TrainingState(os.path.join(work_dir, "train_state.json"), extra={"settings": settings})
    history = classifier.fit(train_data, epochs=int(settings["epochs"]), validation_data=val_data, verbose=verbose,
                             callbacks=[keras.callbacks.BackupAndRestore(os.path.join(work_dir, "backup"),
                                                                         double_checkpoint=True), state])
    accuracy = float(classifier.evaluate(val_data, verbose=0, return_dict=True)["accuracy"])
    with atomic_output(out_path, suffix=".weights.h5") as temporary:
        backbone.save_weights(temporary)
    return {"val_accuracy": round(accuracy, 4),
            "train_accuracy": round(float(history.history["accuracy"][-1]), 4) if history.history else None,
            "weights": os.path.abspath(out_path)}


def _write_summary(out_path, summary):
    write_json(out_path[: -len(".weights.h5")] + ".json", summary, indent=1)
    return summary


# ---------------------------------------------------------------------------------------------------
# The speech stand-in (`avloc pretrain-audio`): DenseAV's spectrogram CNN taught to tell spoken words apart.

SPEECH_NOISE = dict(probability=0.8, snr_db=(0.0, 30.0))
"""White noise added to most training clips, at a signal-to-noise ratio drawn per clip."""


def _audio_classifier(width, classes, dtype):
    import keras

    from keras_avloc.models.denseav_networks import spectrogram_cnn

    backbone = spectrogram_cnn(width, name="audio_cnn", dtype=dtype)
    inputs = keras.Input((None, None, 1), name="audio")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(backbone(inputs))
    logits = keras.layers.Dense(classes, name="classifier", dtype="float32")(pooled)
    return backbone, keras.Model(inputs, logits, name="speech_standin_classifier")


def _speech_dataset(waves, lengths, labels, batch_size, training, seed, level_db):
    """int16 word clips -> (log-mels, word). In training each word starts at a random offset of its clip and most
    clips get white noise; every clip is brought to `level_db` dBFS before the "csol" log-mel (DenseAV's)."""
    import tensorflow as tf

    from keras_avloc.data.audio import csol_logmel, normalize_level

    samples = int(waves.shape[1])
    dataset = tf.data.Dataset.from_tensor_slices((waves, lengths.astype(np.int32), labels.astype(np.int32)))
    low, high = SPEECH_NOISE["snr_db"]

    def augment(sample, seed_pair):
        wave, length, label = sample
        wave = tf.cast(wave, tf.float32) / 32767.0
        seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed_pair % (2**31 - 1), tf.int32), 3))
        room = tf.maximum(samples - length, 0)
        offset = tf.random.stateless_uniform([], seeds[0], 0, room + 1, dtype=tf.int32)
        wave = tf.roll(wave, offset, axis=0)  # the clip's tail is silence: the word moves, nothing wraps round
        power = tf.reduce_sum(tf.square(wave)) / tf.cast(tf.maximum(length, 1), tf.float32)
        snr = tf.random.stateless_uniform([], seeds[1], low, high)
        noise = tf.random.stateless_normal([samples], seeds[2]) * tf.sqrt(power / 10.0 ** (snr / 10.0))
        noisy = tf.random.stateless_uniform([], seeds[1] + 1) < SPEECH_NOISE["probability"]
        return tf.where(noisy, wave + noise, wave), label

    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        dataset = tf.data.Dataset.zip((dataset, tf.data.Dataset.random(seed=seed).batch(2)))
        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(lambda wave, length, label: (tf.cast(wave, tf.float32) / 32767.0, label))
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = dataset.map(lambda wave, label: (csol_logmel(normalize_level(wave, level_db)), label),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def pretrain_audio(out_path, width=16, words_per_language=100, per_word=8, clip_seconds=1.0, epochs=15,
                   batch_size=64, learning_rate=2e-3, level_db=-20.0, seed=0, mixed_precision=None, workers=None,
                   verbose="auto", progress=True, voices="espeak"):
    """Trains the speech stand-in and writes `out_path` (the weights of DenseAV's spectrogram CNN, `audio_cnn`).

    The CNN (`keras_avloc.models.denseav_networks.spectrogram_cnn`) learns to tell apart the words of
    `keras_avloc.data.speech_pretrain` (each word a class) from the "csol" log-mels DenseAV reads; `avloc train
    --init-audio-weights` loads it into DenseAV's audio featurizer.

    Args:
        out_path: weights file to write (must end in `.weights.h5`).
        width: the CNN's base width (DenseAV's `backbone_kwargs["width"]`).
        words_per_language: words of each of the six languages (each word is a class).
        per_word: training renderings per word (one more per word is held out to measure accuracy).
        clip_seconds: clip length (the word at a random offset in training).
        epochs, batch_size, learning_rate: Adam on softmax cross-entropy with a one-epoch warm-up.
        level_db: gated RMS level of every clip before the log-mel (the demo's -20 dBFS).
        seed: words, renderings and training.
        mixed_precision: None or "bf16".
        workers: rendering processes (default: all cores).
        verbose: `model.fit` verbosity; progress: a progress bar while rendering.
        voices: "espeak" (espeak-ng's voices) or "espeak+flite" (English also in CMU Flite's, which are closer to
            recorded voices; `keras_avloc.data.speech_pretrain.FLITE_VOICES`).

    Returns:
        the summary written to `<out>.json` ("words", "clips", "val_accuracy", the settings, the word list).
        A finished file with the same settings is not trained again.

    Example:
    >>> pretrain_audio("runs/standin/speech_w16.weights.h5", width=16)  # doctest: +SKIP
    """
    import keras

    from keras_avloc.data.speech_pretrain import WORD_LISTS, WORD_RULE, build_speech_set

    if int(epochs) < 1 or int(per_word) < 1 or int(words_per_language) < 1 or int(batch_size) < 2 or int(width) < 1:
        raise TrainingError("pretrain-audio: --epochs, --per-word, --words-per-language and --width >= 1, "
                            "--batch-size >= 2 please.")
    training_clips = int(words_per_language) * len(WORD_LISTS) * int(per_word)
    if training_clips < int(batch_size):
        raise TrainingError(f"pretrain-audio: {training_clips} training clips make no batch of {int(batch_size)}; "
                            "raise --words-per-language / --per-word or lower --batch-size.")
    key = {"words_per_language": int(words_per_language), "per_word": int(per_word) + 1,
           "clip_seconds": float(clip_seconds), "seed": int(seed), "word_rule": WORD_RULE}
    if voices != "espeak":  # recorded only when set, so that earlier stand-ins stay finished
        key["voices"] = voices
    settings = dict(key, width=int(width), epochs=int(epochs), batch_size=int(batch_size),
                    learning_rate=float(learning_rate), level_db=float(level_db), mixed_precision=mixed_precision)
    out_path, work_dir, previous = _start(out_path, settings, "the weights of DenseAV's spectrogram CNN")
    if previous:
        return previous
    data = _cached(os.path.join(work_dir, "speech.npz"), key, lambda: build_speech_set(
        int(words_per_language), int(per_word) + 1, float(clip_seconds), seed=int(seed),
        workers=workers or os.cpu_count() or 1, progress=progress, voices=voices))
    held_out = np.arange(len(data["labels"])) % (int(per_word) + 1) == int(per_word)  # one rendering per word
    keras.utils.set_random_seed(int(seed))
    backbone, classifier = _audio_classifier(int(width), len(data["words"]), _dtype(mixed_precision))
    parts = [(data["waves"][mask], data["lengths"][mask], data["labels"][mask]) for mask in (~held_out, held_out)]
    train_data = _speech_dataset(*parts[0], int(batch_size), True, int(seed), float(level_db))
    val_data = _speech_dataset(*parts[1], int(batch_size), False, int(seed), float(level_db))
    summary = {"settings": settings, "words": len(data["words"]), "clips": int((~held_out).sum()),
               "held_out_clips": int(held_out.sum()),
               "truncated_share": round(float(np.mean(data["truncated"])), 4) if "truncated" in data else None}
    summary.update(_fit_and_save(backbone, classifier, train_data, val_data, summary["clips"], settings, out_path,
                                 work_dir, verbose), word_list=data["words"])
    return _write_summary(out_path, summary)
