"""The curated media list behind `avloc data stamps` (no media here: only names and rules).

Stamp selection rule (applied by `keras_avloc.data.stamps.load_catalog`):
  1. the stamp is listed in `STAMPS` below: a Tux Paint stamp that ships its own real recording
     `<name>.ogg` and that shows a real, soundable object (hand-checked; sound effects of symbols,
     letters, road signs, memorials and cartoon vehicles are left out);
  2. `<name>.png` exists and has an alpha channel;
  3. its opaque pixels hold at least `MIN_DISTINCT_COLOURS` distinct RGB colours (photo cut-outs
     have thousands; flat clip-art such as the bee, iguana or glass of water has under 500);
  4. its longest side is at least `MIN_LONGEST_SIDE` pixels (so it is not blown up into mush).
Stamps that fail 2-4 on a given machine are dropped and counted in the build summary.

Several stamps share one class (e.g. "cow" and "cow_white" are both "cow") so that a silent
distractor never has the sounding object's class.
"""

STAMPS_DIR = "/usr/share/tuxpaint/stamps"
SCRATCH_MEDIA = "scratch/usr/share/scratch/Media"

MIN_DISTINCT_COLOURS = 1000
MIN_LONGEST_SIDE = 90

# (stamp path relative to STAMPS_DIR without extension, class name)
STAMPS = (
    ("animals/amphibians/frog", "frog"),
    ("animals/birds/blackbird", "blackbird"),
    ("animals/birds/crow", "crow"),
    ("animals/birds/cuckoo", "cuckoo"),
    ("animals/birds/drake", "duck"),
    ("animals/birds/duck", "duck"),
    ("animals/birds/gander", "goose"),
    ("animals/birds/hen", "chicken"),
    ("animals/birds/rooster", "chicken"),
    ("animals/birds/heron_greatblue_flying", "heron"),
    ("animals/birds/lark", "lark"),
    ("animals/birds/nandou", "rhea"),
    ("animals/birds/owl", "owl"),
    ("animals/birds/penguin", "penguin"),
    ("animals/birds/quetzal", "quetzal"),
    ("animals/birds/seagull", "seagull"),
    ("animals/birds/tucan", "toucan"),
    ("animals/birds/turkey", "turkey"),
    ("animals/birds/vulture", "vulture"),
    ("animals/insects/bee", "bee"),  # clip-art: dropped by the colour rule, kept here to document it
    ("animals/insects/grasshopper", "grasshopper"),
    ("animals/insects/hornet", "hornet"),
    ("animals/insects/xanthia", "moth"),
    ("animals/lizards/iguana", "iguana"),  # clip-art: dropped by the colour rule
    ("animals/mammals/apes/chimp", "chimpanzee"),
    ("animals/mammals/apes/gorilla", "gorilla"),
    ("animals/mammals/aquatic/dolphin", "dolphin"),
    ("animals/mammals/aquatic/orca", "orca"),
    ("animals/mammals/aquatic/sea_lion", "sea lion"),
    ("animals/mammals/aquatic/whale", "whale"),
    ("animals/mammals/badger", "badger"),
    ("animals/mammals/bears/bear", "bear"),
    ("animals/mammals/bovines/bison", "bison"),
    ("animals/mammals/bovines/bull", "bull"),
    ("animals/mammals/bovines/cow", "cow"),
    ("animals/mammals/bovines/cow_white", "cow"),
    ("animals/mammals/bovines/goat", "goat"),
    ("animals/mammals/bovines/mountaingoat", "goat"),
    ("animals/mammals/bovines/ram", "sheep"),
    ("animals/mammals/bovines/sheep", "sheep"),
    ("animals/mammals/bovines/sheep_lamb", "sheep"),
    ("animals/mammals/camel/camel", "camel"),
    ("animals/mammals/camel/dromedary", "camel"),
    ("animals/mammals/cats/lion", "lion"),
    ("animals/mammals/cats/tiger", "tiger"),
    ("animals/mammals/deer/caribou", "caribou"),
    ("animals/mammals/deer/deer", "deer"),
    ("animals/mammals/deer/doe", "deer"),
    ("animals/mammals/dogs/dog", "dog"),
    ("animals/mammals/dogs/fox", "fox"),
    ("animals/mammals/elephant", "elephant"),
    ("animals/mammals/equines/donkey", "donkey"),
    ("animals/mammals/equines/horse", "horse"),
    ("animals/mammals/equines/zebra", "zebra"),
    ("animals/mammals/ferret", "ferret"),
    ("animals/mammals/giraffe", "giraffe"),
    ("animals/mammals/hippopotamus", "hippopotamus"),
    ("animals/mammals/pig", "pig"),
    ("animals/mammals/pig_golden", "pig"),
    ("animals/mammals/pig_golden2", "pig"),
    ("animals/mammals/rodents/beaver", "beaver"),
    ("animals/mammals/rodents/mouse", "mouse"),
    ("animals/mammals/rodents/rabbit", "rabbit"),
    ("animals/mammals/rodents/squirrel", "squirrel"),
    ("animals/marsupials/koala", "koala"),
    ("animals/marsupials/wombat", "wombat"),
    ("food/fruit/apple_red", "apple"),  # 46x50 px: dropped by the size rule
    ("hobbies/camera_35mm", "camera"),
    ("hobbies/music/percussion/cymbal_crash", "cymbal"),
    ("hobbies/music/percussion/drum_tomtom_floor", "drum"),
    ("hobbies/music/percussion/drumkit", "drum kit"),
    ("hobbies/music/string/cello", "cello"),
    ("hobbies/music/string/violin", "violin"),
    ("hobbies/music/wind/bassoon", "bassoon"),
    ("household/arttools/scissors_small_open", "scissors"),  # too small and few colours: dropped
    ("household/dishes/glass", "glass"),  # clip-art: dropped by the colour rule
    ("household/kettle", "kettle"),
    ("household/rubberduck", "rubber duck"),
    ("household/toilet", "toilet"),
    ("household/tools/hammer", "hammer"),
    ("household/tools/mallet_metal", "mallet"),
    ("household/tools/saw", "saw"),
    ("vehicles/emergency/firetruck", "fire truck"),
)

# Extra real recordings from the scratch package (relative to SCRATCH_MEDIA/Sounds), for classes that also
# have a stamp. Which recordings of a class are "unseen" (kept for the val_unseen / test_unseen splits, never
# heard in training) is decided by `keras_avloc.data.stamps.assign_unseen_recordings`.
EXTRA_RECORDINGS = (
    ("Animal/Dog1.wav", "dog"),
    ("Animal/Dog2.wav", "dog"),
    ("Animal/Duck.wav", "duck"),
    ("Animal/Goose.wav", "goose"),
    ("Animal/Horse.wav", "horse"),
    ("Animal/HorseGallop.wav", "horse"),
    ("Animal/Owl.wav", "owl"),
    ("Animal/Rooster.wav", "chicken"),
    ("Animal/SeaLion.mp3", "sea lion"),
    ("Percussion/CymbalCrash.wav", "cymbal"),
    ("Percussion/RideCymbal.wav", "cymbal"),
    ("Music Loops/DrumSet1.mp3", "drum kit"),
    ("Music Loops/DrumSet2.mp3", "drum kit"),
)

# Stamps whose recording is another stamp's recording re-encoded (same waveform): their pictures are used,
# their recordings are not (they would be the same sound under a second name, or under another class).
DUPLICATE_RECORDINGS = (
    "animals/mammals/bovines/mountaingoat",  # = goat
    "animals/mammals/bovines/ram",  # = goat (so "sheep" would bleat like a goat)
)

# Real ambience recordings for the optional 10-20 dB SNR background sound.
AMBIENCE_RECORDINGS = (
    "Effects/WaterRunning.mp3",
    "Effects/Ripples.wav",
    "Effects/Bubbles.wav",
    "Human/PartyNoise.wav",
)

# Backgrounds: every .jpg under SCRATCH_MEDIA/Backgrounds except these cartoons (.gif/.png are
# all cartoons or tiny and are never used).
BACKGROUND_EXCLUDE = (
    "party-room",
    "room1",
    "room2",
    "room3",
    "spotlight-stage",
    "woods-and-bench",
    "school2",
)
