"""`avloc localize`: heatmaps from a trained model for one image + audio (four-panel PNG) or a video
(overlay mp4 with a sliding audio window per heatmap)."""

import os

from keras_avloc.cli import CliError, ExampleFormatter
from keras_avloc.cli import args as types

EPILOG = """Examples:
  avloc localize --checkpoint runs/lvs/model.keras --image frame.jpg --audio clip.wav --out out.png
  avloc localize --checkpoint runs/lvs/model.keras --video clip.mp4 --out overlay.mp4
  avloc localize --checkpoint runs/ezvsl/model.keras --video clip.mp4 --out overlay.mp4 --heatmap-fps 10
  avloc localize --checkpoint runs/denseav/model.keras --video talk.mp4 --out talk.mp4 --heads
  avloc localize --checkpoint runs/avsa/model.keras --video pano.mp4 --audio pano_ambix.wav --out pano.png

An image gives the four-panel figure (image, heatmap, strongly positive region, clipped positive image).
A video gives an mp4 of the heatmaps blended on its frames, with its audio; each heatmap uses the
--clip-seconds of audio centred on its time. --heads (DenseAV) writes one figure or video per head
(OUT_head0.mp4, OUT_head1.mp4, ...): the map of the head that hears speech follows the spoken word, the other
the sound, as they happen. An AVC / AVSA model takes a 360° clip (equirectangular video with a 4-channel ambiX
track, or --audio with one) and draws where the sound comes from over the panorama: a .png of the middle
window (the model's map and the steered-response power, with their directions of arrival) or a .mp4 with a map
for each --heatmap-fps window.
"""


def register(subparsers):
    parser = subparsers.add_parser(
        "localize",
        help="draw sound-source heatmaps for an image+audio pair or a video",
        description="Runs a trained model (OUT/model.keras from `avloc train`) on your own media.",
        formatter_class=ExampleFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--checkpoint", required=True, metavar="MODEL.keras", help="trained model file")
    parser.add_argument("--video", default=None, help="input video (its frames and audio track)")
    parser.add_argument("--image", default=None, help="input image (with --audio)")
    parser.add_argument("--audio", default=None, help="input audio for --image (any format ffmpeg/soundfile reads)")
    parser.add_argument("--out", required=True, help="output: .png for --image, .mp4 for --video")
    parser.add_argument("--image-size", type=types.IMAGE_SIZE, default=None,
                        help="model input side (default: the model's own setting, its training size)")
    parser.add_argument("--clip-seconds", type=types.CLIP_SECONDS, default=None,
                        help="audio window length (default: the model's own setting)")
    parser.add_argument("--heatmap-fps", type=types.number(above=0, maximum=120), default=5.0,
                        help="heatmaps per second of video (default 5)")
    parser.add_argument("--batch-size", type=types.integer(1, 1024), default=8, help="frames per model call (default 8)")
    parser.add_argument("--heads", action="store_true",
                        help="a model with several similarity heads (DenseAV): one output per head, OUT_head<k>")
    parser.add_argument("--ogl", type=types.number(minimum=0, maximum=1), default=None, metavar="ALPHA",
                        help="EZ-VSL object-guided localisation weight in [0, 1] (paper: 0.4)")
    parser.set_defaults(func=run)


def preprocess_image(image_uint8, size):
    """RGB uint8 [H, W, 3] -> ImageNet-normalised float32 [size, size, 3] (squashed, bicubic, as the test
    pipeline)."""
    import numpy as np
    from PIL import Image

    from keras_avloc.io.imagenet import normalize_images

    return normalize_images(np.asarray(Image.fromarray(image_uint8).resize((size, size), Image.BICUBIC)))


def audio_windows(wave, centres, sample_rate=16000, clip_seconds=3.0):
    """Clips of `clip_seconds` centred on each time in `centres` (seconds), shifted to stay inside the
    wave; a wave shorter than the clip is tiled. Returns float32 [len(centres), clip samples]."""
    import numpy as np

    length = int(round(sample_rate * clip_seconds))
    if wave.shape[0] < length:
        wave = np.tile(wave, int(length / max(1, wave.shape[0])) + 1)[:length]
    starts = np.clip(np.round((np.asarray(centres) - clip_seconds / 2) * sample_rate).astype(int), 0,
                     wave.shape[0] - length)
    return np.stack([wave[start : start + length] for start in starts]).astype(np.float32)


def _heatmaps(model, images, waves, batch_size, ogl, heads=False):
    """Heatmaps [N, H, W] (or [N, K, H, W] per head) with the model's own audio front-end."""
    import numpy as np

    from keras_avloc.data.audio import with_level

    level = (getattr(model, "eval_settings", None) or {}).get("audio_level_db")
    frontend = with_level(getattr(model, "frontend", "lvs"), level)
    maps = []
    for start in range(0, len(images), batch_size):
        spectrograms = np.asarray(frontend(waves[start : start + batch_size]))
        batch = images[start : start + batch_size]
        if heads:
            maps.append(model.localize_heads(batch, spectrograms))
        elif ogl is not None:
            maps.append(model.localize(batch, spectrograms, ogl_alpha=ogl))
        else:
            maps.append(model.localize(batch, spectrograms))
    return np.concatenate(maps)


def run(args):
    from keras_avloc.io.files import check_output_file

    if bool(args.video) == bool(args.image):
        raise CliError("pass either --video clip.mp4, or --image x.jpg with --audio y.wav.")
    if args.image and not args.audio:
        raise CliError("--image needs --audio (the sound to localise).")
    for flag, path in (("--checkpoint", args.checkpoint), ("--video", args.video), ("--image", args.image),
                       ("--audio", args.audio)):
        if path and not os.path.isfile(path):
            raise CliError(f"{flag} {path}: no such file.")
    check_output_file(args.out)
    extension = os.path.splitext(args.out)[1].lower()
    if args.image and extension not in (".png", ".jpg", ".pdf", ".svg"):
        raise CliError(f"--out {args.out}: an image input writes a figure; use a .png name.")

    import inspect

    import numpy as np

    from keras_avloc.io.media import MediaError, read_audio, read_frames, read_image
    from keras_avloc.models import load_model
    from keras_avloc.models.contract import MultiHead

    model = load_model(args.checkpoint, compile=False)
    if getattr(model, "data_kind", "frames") == "sphere":
        if extension not in (".mp4", ".png", ".jpg", ".pdf", ".svg"):
            raise CliError(f"--out {args.out}: a 360° clip writes a figure (.png) or a video (.mp4).")
        return _run_sphere(args, model, extension)
    if args.video and extension != ".mp4":
        raise CliError(f"--out {args.out}: a video input writes a video; use a .mp4 name.")
    if args.ogl is not None and "ogl_alpha" not in inspect.signature(model.localize).parameters:
        raise CliError(f"--ogl is only supported by EZ-VSL models; {args.checkpoint} is {type(model).__name__}.")
    if args.heads and not isinstance(model, MultiHead):
        raise CliError(f"--heads needs a model with several similarity heads (DenseAV); {args.checkpoint} is "
                       f"{type(model).__name__}.")
    if args.heads and args.ogl is not None:
        raise CliError("--heads and --ogl do not combine; pass one of them.")
    stem, extension_of_out = os.path.splitext(args.out)
    written = [args.out]
    settings = dict(getattr(model, "eval_settings", None) or {})
    image_size = args.image_size or int(settings.get("image_size", 224))
    clip_seconds = args.clip_seconds or float(settings.get("clip_seconds", 3.0))

    if args.image:
        from keras_avloc.viz import four_panel_figure

        # Huge photos are decoded at reduced size (a few times the model's input), never in full.
        image = read_image(args.image, min_side=max(image_size, 512))
        wave = read_audio(args.audio, 16000)
        centre = wave.shape[0] / 2 / 16000
        heatmap = _heatmaps(model, preprocess_image(image, image_size)[None],
                            audio_windows(wave, [centre], clip_seconds=clip_seconds), 1, args.ogl, args.heads)[0]
        if args.heads:
            written = [f"{stem}_head{head}{extension_of_out}" for head in range(len(heatmap))]
            for head, path in enumerate(written):
                four_panel_figure(image, heatmap[head], path=path, title=f"{os.path.basename(args.image)}, head {head}")
        else:
            four_panel_figure(image, heatmap, path=args.out, title=os.path.basename(args.image))
    else:
        from keras_avloc.viz import write_overlay_video

        frames, fps = read_frames(args.video)
        try:
            wave = read_audio(args.video, 16000)
        except MediaError as err:
            raise CliError(f"--video {args.video}: no usable audio track ({err}).") from err
        duration = len(frames) / float(fps)
        count = max(1, int(round(duration * args.heatmap_fps)))
        centres = (np.arange(count) + 0.5) * duration / count
        picks = np.minimum((centres * fps).astype(int), len(frames) - 1)
        images = np.stack([preprocess_image(frames[i], image_size) for i in picks])
        windows = audio_windows(wave, centres, clip_seconds=clip_seconds)
        from tqdm import tqdm

        progress = tqdm(total=count, desc="heatmaps", unit="map", disable=count < 4 * args.batch_size)
        maps = []
        for start in range(0, count, args.batch_size):
            maps.append(_heatmaps(model, images[start : start + args.batch_size],
                                  windows[start : start + args.batch_size], args.batch_size, args.ogl, args.heads))
            progress.update(len(maps[-1]))
        progress.close()
        maps = np.concatenate(maps)
        if args.heads:
            written = [f"{stem}_head{head}{extension_of_out}" for head in range(maps.shape[1])]
            for head, path in enumerate(written):
                write_overlay_video(path, frames, maps[:, head], fps, audio=wave, sample_rate=16000)
        else:
            write_overlay_video(args.out, frames, maps, fps, audio=wave, sample_rate=16000)
    print(f"wrote {', '.join(written)}")
    return 0


def _run_sphere(args, model, extension):
    """`localize` for AVC / AVSA: sweep maps over a 360° clip (see the epilog)."""
    import numpy as np

    from keras_avloc.evaluation.sphere import grid_to_panorama, srp_grid, sweep_map
    from keras_avloc.io.media import MediaError, read_frames, read_multichannel_audio

    if not args.video:
        raise CliError("an AVC / AVSA model localises in 360° clips: pass --video PANORAMA.mp4 (equirectangular), "
                       "with --audio AMBIX.wav unless the video's own track is 4-channel ambiX.")
    if args.heads or args.ogl is not None:
        raise CliError("--heads and --ogl do not apply to AVC / AVSA models; drop them.")
    rate, length = 24000, 24000
    frames, fps = read_frames(args.video, fps=16)
    if frames.shape[2] != 2 * frames.shape[1]:
        print(f"note: {args.video} is {frames.shape[2]} x {frames.shape[1]}, not 2:1; it is read as an "
              "equirectangular panorama anyway")
    try:
        foa = read_multichannel_audio(args.audio or args.video, rate, 4)
    except MediaError as err:
        hint = "" if args.audio else "; pass --audio AMBIX.wav (a 4-channel ambiX file) with it"
        raise CliError(f"{err}{hint}") from err
    duration = len(frames) / 16.0
    count = 1 if extension != ".mp4" else max(1, int(round(duration * args.heatmap_fps)))
    centres = (np.arange(count) + 0.5) * duration / count
    maps = []
    for centre in centres:
        middle = min(len(frames) - 1, int(centre * 16))
        start = int(np.clip(middle - model.frames // 2, 0, max(0, len(frames) - model.frames)))
        window = frames[start:start + model.frames]
        if len(window) < model.frames:
            window = np.concatenate([window, np.repeat(window[-1:], model.frames - len(window), axis=0)])
        first = int(np.clip(round(centre * rate) - length // 2, 0, max(0, foa.shape[1] - length)))
        field = foa[:, first:first + length]
        field = np.pad(field, ((0, 0), (0, length - field.shape[1])))
        maps.append((sweep_map(model, window, field), field, middle))
    size = frames.shape[1:3]
    if extension != ".mp4":
        from keras_avloc.evaluation.sphere import SWEEP_LATITUDES, SWEEP_LONGITUDES, _direction_of
        from keras_avloc.spatial import direction_to_equirect, srp_direction
        from keras_avloc.viz.figures import sphere_figure

        grid, field, middle = maps[0]
        name = model.display_name or model.name
        sphere_figure(frames[middle], {name: grid_to_panorama(grid, size), "SRP": grid_to_panorama(srp_grid(field), size)},
                      {name: direction_to_equirect(*_direction_of(grid, SWEEP_LONGITUDES, SWEEP_LATITUDES)),
                       "SRP": direction_to_equirect(*srp_direction(field, 2.0))},
                      path=args.out, title=os.path.basename(args.video))
    else:
        from keras_avloc.viz import write_overlay_video

        panoramas = np.stack([grid_to_panorama(grid, size) for grid, _, _ in maps])
        write_overlay_video(args.out, frames, panoramas, 16.0, audio=np.clip(foa[0], -1, 1), sample_rate=rate)
    print(f"wrote {args.out}")
    return 0
