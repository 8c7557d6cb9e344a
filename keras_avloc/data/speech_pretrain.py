"""The speech stand-in's data: spoken words that never name a benchmark object, rendered by espeak-ng (and
optionally CMU Flite).

DenseAV's paper starts its audio featurizer from HuBERT, a network that already hears speech; HuBERT cannot be
downloaded here. The honest stand-in (`avloc pretrain-audio`) trains DenseAV's spectrogram CNN to tell spoken words
apart. The words come from the word lists that Debian packages ship (`wamerican`, `wbritish`, `wfrench`, `wngerman`,
`wspanish`, `witalian`, `wportuguese`), and each is spoken by espeak-ng in its language's voices, with random voice
variants, rates and pitches (`voices="espeak+flite"`: English also in Flite's voices).

What it never hears (`is_banned`, every word compared without accents or umlauts, `fold`):
- any word of any stamp description of a benchmark class, in any of the ~80 languages of the stamps' `.txt`
  files (every class name and its translations are among them), and the hand-written `EXTRA_BANNED` (irregular
  plurals, synonyms, young and male or female forms that the descriptions do not use);
- a word that starts with a banned one and is at most three letters longer (plurals, inflections), or equals one
  but for a final vowel (Italian and Portuguese plurals);
- the languages that only `test_speech_unseen` speaks (Danish, Dutch, Romanian);
- Tux Paint's real recordings of the descriptions (the speech test splits' English).
A form that is in none of these can still slip through (e.g. a German compound with an object's name inside), and
German proper names come in with the German list's capitalised nouns. `WORD_RULE` numbers the rule: a stand-in
drawn with another rule is not reused.

What it is not: HuBERT. A few hundred synthetic voices saying a few hundred words each teach the featurizer what
distinguishes spoken words from one another, not the breadth of 960 hours of read speech.

Everything random derives from (seed, word index, rendering index), so a set is reproducible for a given
espeak-ng.
"""

import os
import re
import subprocess

import numpy as np

from keras_avloc.data import stamps_catalog as catalog
from keras_avloc.data.stamps_media import MediaMissingError

SAMPLE_RATE = 16000
WORD_LISTS = {
    "en": ("american-english", "british-english"),
    "fr": ("french",),
    "de": ("ngerman",),
    "es": ("spanish",),
    "it": ("italian",),
    "pt": ("portuguese",),
}
"""Word lists (files of /usr/share/dict, from the `w*` Debian packages) per espeak-ng language."""
VOICES = {
    "en": ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029"),
    "fr": ("fr", "fr-be"),
    "de": ("de",),
    "es": ("es", "es-419"),
    "it": ("it",),
    "pt": ("pt", "pt-br"),
}
"""espeak-ng voices per language."""
FLITE_VOICES = ("flite:awb", "flite:rms", "flite:slt", "flite:kal16")
"""CMU Flite's English voices (`flite`, Debian package `flite`): three statistical voices built from recordings of
real speakers (CMU ARCTIC) and a diphone one; `voices="espeak+flite"` adds them to English."""
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
            "croak")
"""espeak-ng voice variants (speaker characters) drawn for each rendering; "" is the voice's own."""
RATES = (110, 200)
"""Range of speaking rates, words per minute."""
PITCHES = (25, 75)
"""Range of espeak-ng pitches (0-99; 50 is the voice's default)."""
WORD_RULE = 2
"""The version of the ban rule (1: the descriptions and their suffix inflections; 2: + `EXTRA_BANNED`, folding and
final vowels); recorded with every stand-in."""
EXTRA_BANNED = frozenset("""
mice geese oxen cattle calf calves puppy puppies pup hound pony ponies foal mare stallion colt swine hog piglet boar
rooster hen chick poultry drake duckling gosling fowl owlet hoot fiddle drums drummer percussion snare hog ewe lamb
ram billy buck doe fawn stag bunny hare cub whelp kitten ape monkey shark dove pigeon bird birds beetle wasp insect
chevaux cheval poulain jument vache veau taureau boeuf bœuf cochon porc truie porcelet poule poulet coq poussin canard
caneton oie oies hibou hiboux chouette chien chiot tambour batterie violon mouton agneau chèvre lapin ours renard
hund hunde welpe pferd pferde fohlen stute kuh kühe kalb rind rinder ochse schwein schweine ferkel sau huhn hühner
hahn hähne küken ente enten gans gänse eule eulen kauz schlagzeug trommel geige maus mäuse frosch frösche fuchs
füchse hammer hämmer säge schaf lamm ziege hase kaninchen bär löwe
perro perros cachorro caballo caballos potro yegua vaca vacas ternero toro buey cerdo cerdos cochino lechón gallina
gallo pollo pollito pato patos búho búhos lechuza mochuelo batería tambor violín oveja cordero cabra conejo oso zorro
asno burro sierra serrucho ratón ratones león
cane cani cucciolo cavallo cavalli puledro mucca mucche vacca vitello toro tori bue maiale maiali porco suino gallina
galline gallo pollo pulcino anatra anatre oca oche gufo gufi civetta barbagianni batteria tamburo tamburi violino
pecora pecore agnello capra coniglio conigli orso orsi volpe topo topi sega seghe cammello cammelli cervo cervi
asino asini tacchino tacchini leone leoni
cão cães cachorro cavalo cavalos potro égua vaca vitelo touro boi porco porcos leitão galinha galo frango pinto pato
patos coruja mocho bateria tambor violino ovelha cordeiro cabra coelho urso raposa rato ratos leão leões serra burro
heifer heifers vixen sows steer steers cockerel gobbler hippo hippos bunnies nanny mutt eber zicklein ochse génisse
brebis taurillon semental borrego becerro novillo cabrito giumenta cagna scrofa papero garanhão cadela bezerro
novilha
""".split())
"""Words for the benchmark's objects that the stamp descriptions do not use: irregular plurals, synonyms, young and
male or female forms in the six languages, mostly of the demo's eight classes (a hand-written list, not complete;
banned like the descriptions' words)."""
VOWELS = "aeiouy"
WORD_PATTERN = re.compile(r"^[^\W\d_]{4,12}$")
"""Letters only, 4 to 12 of them: no possessives, abbreviations or hyphenated compounds."""


def fold(word):
    """`word` lowercased without accents or umlauts ("Kühe" -> "kuhe", "búho" -> "buho")."""
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", word.lower()) if not unicodedata.combining(c))


def banned_words(stamps_dir=None):
    """Every word of every description (all languages) of the stamps of the benchmark's classes, the class names and
    `EXTRA_BANNED`, folded (`fold`).

    Returns:
        a set of folded words.
    """
    stamps_dir = stamps_dir or catalog.STAMPS_DIR
    banned = set(EXTRA_BANNED)
    for stamp, class_name in catalog.STAMPS:
        banned |= set(re.findall(r"[^\W\d_]+", class_name.lower()))
        banned |= set(re.findall(r"[^\W\d_]+", os.path.basename(stamp).lower()))
        try:
            with open(os.path.join(stamps_dir, stamp + ".txt"), encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    text = line.partition("=")[2] if "=" in line.split(" ")[0] else line
                    banned |= set(re.findall(r"[^\W\d_]+", text.lower()))
        except OSError:
            pass  # a stamp without a description: its name is banned above
    return {fold(word) for word in banned}


def _stem(word):
    return word[:-1] if len(word) >= 4 and word[-1] in VOWELS else word


def banned_stems(banned):
    """The stems (`banned` words of 4 letters or more without a final vowel) that `is_banned` compares with."""
    return {_stem(word) for word in banned if len(word) >= 4}


def is_banned(word, banned, stems=None):
    """`word` (folded) is a banned word; or starts with one (of 3 letters or more) and is at most 3 letters longer
    ("owls", "kühe" for "kuh"); or equals one but for a final vowel ("orsi" for "orso", "conigli" for "coniglio").
    `stems`: `banned_stems(banned)`, computed once by a caller that checks many words."""
    word = fold(word)
    if word in banned or any(word[:length] in banned for length in range(max(3, len(word) - 3), len(word))):
        return True
    stems = banned_stems(banned) if stems is None else stems
    return _stem(word) in stems or word in stems


def read_word_list(language, dict_dir="/usr/share/dict"):
    """The usable words of `language`'s lists (lowercase, unique, in file order; German nouns lowercased)."""
    missing = [os.path.join(dict_dir, name) for name in WORD_LISTS[language]
               if not os.path.isfile(os.path.join(dict_dir, name))]
    if missing:  # every list, or the words drawn would change without a setting saying so
        raise MediaMissingError(f"{', '.join(missing)}: no such word list; the speech stand-in reads the Debian word "
                                "lists: `sudo apt-get install wamerican wbritish wfrench wngerman wspanish witalian "
                                "wportuguese` or `bash tools/setup.sh`.")
    words, seen = [], set()
    for name in WORD_LISTS[language]:
        path = os.path.join(dict_dir, name)
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                word = line.strip()
                # Proper names are capitalised, so left out, except in German, where every noun is (German
                # proper names come in with them).
                if not WORD_PATTERN.match(word) or (word != word.lower() and language != "de"):
                    continue
                word = word.lower()
                if word not in seen:
                    seen.add(word)
                    words.append(word)
    return words


def choose_words(words_per_language, languages=tuple(WORD_LISTS), seed=0, dict_dir="/usr/share/dict",
                 stamps_dir=None):
    """[(language, word)] : `words_per_language` allowed words of each language, drawn with `seed`."""
    banned = banned_words(stamps_dir)
    stems = banned_stems(banned)
    chosen = []
    for index, language in enumerate(languages):
        if language not in WORD_LISTS:
            raise ValueError(f"speech stand-in: unknown language {language!r}; choose from {sorted(WORD_LISTS)}.")
        allowed = [word for word in read_word_list(language, dict_dir) if not is_banned(word, banned, stems)]
        if len(allowed) < words_per_language:
            raise ValueError(f"speech stand-in: only {len(allowed)} usable {language} words, {words_per_language} asked.")
        rng = np.random.default_rng([int(seed), index])
        picks = rng.choice(len(allowed), size=int(words_per_language), replace=False)
        chosen += [(language, allowed[pick]) for pick in sorted(picks)]
    return chosen


def _parse_wav(data, engine="espeak-ng"):
    """(sample rate, int16 samples) of a WAV on a synthesiser's standard output (espeak-ng leaves its header's
    lengths unfilled, so they are not read)."""
    if data[:4] != b"RIFF" or b"data" not in data[:256]:
        raise ValueError(f"{engine} did not write a WAV")
    rate = int.from_bytes(data[24:28], "little")
    start = data.index(b"data", 12) + 8
    body = data[start:]
    return rate, np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2")


def speak(word, voice, rate, pitch):
    """espeak-ng's (or, for a "flite:<voice>", CMU Flite's) rendering of `word` as float32 at 16 kHz, leading and
    trailing silence trimmed. Flite takes the rate as a duration stretch and keeps its voice's own pitch."""
    from scipy.signal import resample_poly

    if voice.startswith("flite:"):
        name = voice[len("flite:"):]
        if name not in flite_voices():  # flite speaks an unknown voice as its default one, without a word
            raise MediaMissingError(f"flite has no voice {name!r} (`flite -lv` lists {sorted(flite_voices())}); "
                                    "`sudo apt-get install flite` or `bash tools/setup.sh`.")
        stretch = FLITE_RATE / float(rate)  # flite's own pace is about FLITE_RATE words per minute
        engine, command = "flite", ["flite", "-voice", name, "-t", word, "-o", "/dev/stdout",
                                    "--setf", f"duration_stretch={stretch:.3f}"]
    else:
        engine, command = "espeak-ng", ["espeak-ng", "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)),
                                        "--stdout", word]
    try:
        result = subprocess.run(command, check=True, capture_output=True)
    except OSError as err:
        raise MediaMissingError(f"{engine} is needed for the speech stand-in: `sudo apt-get install {engine}` or "
                                "`bash tools/setup.sh`.") from err
    except subprocess.CalledProcessError as err:
        message = err.stderr.decode("utf-8", "replace").strip()
        raise MediaMissingError(f"{engine} could not speak {word!r} in the voice {voice!r}: {message or err}; "
                                f"this {engine} may lack the voice (`{engine} --voices` lists them).") from err
    source_rate, samples = _parse_wav(result.stdout, engine)
    wave = samples.astype(np.float32) / 32768.0
    if source_rate != SAMPLE_RATE:
        divisor = np.gcd(SAMPLE_RATE, source_rate)
        wave = resample_poly(wave, SAMPLE_RATE // divisor, source_rate // divisor).astype(np.float32)
    loud = np.flatnonzero(np.abs(wave) > 0.01 * max(float(np.abs(wave).max()), 1e-6))
    return wave[loud[0]: loud[-1] + 1] if len(loud) else wave


FLITE_RATE = 150.0
"""Words per minute of Flite's own pace: a rendering's rate r becomes a duration stretch of FLITE_RATE / r."""


def flite_voices():
    """The voices this `flite` has (`flite -lv`; empty without flite), read once."""
    if "flite" not in _FLITE:
        try:
            listing = subprocess.run(["flite", "-lv"], capture_output=True, check=True).stdout.decode()
            _FLITE["flite"] = set(listing.split(":", 1)[-1].split())
        except (OSError, subprocess.CalledProcessError):
            _FLITE["flite"] = set()
    return _FLITE["flite"]


_FLITE = {}


def rendering(word_index, rendering_index, language, seed, voices="espeak"):
    """The (voice, rate, pitch) of one rendering of one word, from (seed, word, rendering); `voices` "espeak" or
    "espeak+flite" (English also in `FLITE_VOICES`)."""
    if voices not in ("espeak", "espeak+flite"):
        raise ValueError(f"speech stand-in: voices must be 'espeak' or 'espeak+flite', got {voices!r}.")
    rng = np.random.default_rng([int(seed), int(word_index), int(rendering_index)])
    choices = VOICES[language] + (FLITE_VOICES if voices == "espeak+flite" and language == "en" else ())
    variant = VARIANTS[rng.integers(len(VARIANTS))]
    voice = choices[rng.integers(len(choices))]
    voice += f"+{variant}" if variant and not voice.startswith("flite:") else ""
    return voice, int(rng.integers(RATES[0], RATES[1] + 1)), int(rng.integers(PITCHES[0], PITCHES[1] + 1))


def _render_task(task):
    word_index, rendering_index, language, word, seed, clip_samples, voices = task
    voice, rate, pitch = rendering(word_index, rendering_index, language, seed, voices)
    wave = speak(word, voice, rate, pitch)
    clip = np.zeros(clip_samples, np.int16)
    kept = wave[:clip_samples]
    clip[: len(kept)] = np.round(np.clip(kept, -1.0, 1.0) * 32767.0).astype(np.int16)
    return clip, len(wave)  # longer than the clip: the word's end is cut


def build_speech_set(words_per_language=100, per_word=8, clip_seconds=1.0, languages=tuple(WORD_LISTS), seed=0,
                     workers=1, progress=True, dict_dir="/usr/share/dict", stamps_dir=None, voices="espeak"):
    """Renders `per_word` spoken versions of each chosen word.

    Args:
        words_per_language: words drawn from each language's lists (each word is a class).
        per_word: renderings of each word (voice, variant, rate and pitch drawn per rendering).
        clip_seconds: the clips' length; each word starts at sample 0 and the rest is silence (training shifts it).
        languages: espeak-ng languages among `WORD_LISTS`.
        seed: the words and the renderings derive from it.
        workers: rendering processes.
        progress: a progress bar.
        voices: "espeak" (espeak-ng only) or "espeak+flite" (English also in CMU Flite's voices).

    Returns:
        {"waves": int16 [N, clip samples], "lengths": int [N] (samples of speech), "truncated": bool [N] (the
        word was longer than the clip: its end is cut), "labels": int [N] (the word), "words": ["en:word", ...]};
        rendering r of word w is row w * per_word + r.
    """
    words = choose_words(int(words_per_language), languages, seed, dict_dir, stamps_dir)
    clip_samples = int(round(float(clip_seconds) * SAMPLE_RATE))
    tasks = [(w, r, language, word, int(seed), clip_samples, voices) for w, (language, word) in enumerate(words)
             for r in range(int(per_word))]
    from tqdm.auto import tqdm

    bar = dict(total=len(tasks), desc="speaking words", unit="clip", disable=not progress)
    if int(workers) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(int(workers)) as pool:
            results = list(tqdm(pool.map(_render_task, tasks, chunksize=32), **bar))
    else:
        results = [_render_task(task) for task in tqdm(tasks, **bar)]
    return {"waves": np.stack([clip for clip, _ in results]),
            "lengths": np.array([min(n, clip_samples) for _, n in results]),
            "truncated": np.array([n > clip_samples for _, n in results]),
            "labels": np.repeat(np.arange(len(words)), int(per_word)),
            "words": [f"{language}:{word}" for language, word in words]}
