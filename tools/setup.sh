#!/usr/bin/env bash
# Installs everything keras-avloc needs on a Debian/Ubuntu machine, idempotently:
#   apt: ffmpeg, tuxpaint-stamps-default (photo stamps + recordings), espeak-ng (TTS prompts),
#        mate-backgrounds + mypaint-data-extras (the backgrounds of the out-of-generator splits),
#        the word lists wamerican wbritish wfrench wngerman wspanish witalian wportuguese and flite (the speech
#        stand-in)
#   the `scratch` package's background photos, unpacked (never installed: it would pull a VM)
#   a virtualenv in ./.venv with `pip install -e .[test]`
# Re-running it is fast: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_packages=(ffmpeg tuxpaint-stamps-default espeak-ng mate-backgrounds mypaint-data-extras
              wamerican wbritish wfrench wngerman wspanish witalian wportuguese flite)
python3 -c "import ensurepip" 2>/dev/null || apt_packages+=(python3-venv)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
updated=0
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq && updated=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

media="${KERAS_AVLOC_MEDIA:-$HOME/.cache/keras-avloc/media}"
if [ ! -d "$media/scratch/usr/share/scratch/Media/Backgrounds" ]; then
  echo "[setup] unpacking the scratch package's backgrounds into $media/scratch"
  tmp=$(mktemp -d)
  [ "$updated" = 1 ] || $SUDO apt-get update -qq
  (cd "$tmp" && apt-get download -qq scratch 2>/dev/null || (cd "$tmp" && $SUDO apt-get download -qq scratch))
  mkdir -p "$media/scratch"
  dpkg-deb -x "$tmp"/scratch_*.deb "$media/scratch"
  rm -rf "$tmp"
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if [ ! -f .venv/.installed ] || [ setup.py -nt .venv/.installed ] || [ requirements.txt -nt .venv/.installed ]; then
  echo "[setup] pip install -e .[test]"
  .venv/bin/pip install -q -e ".[test]"
  touch .venv/.installed
fi
echo "[setup] ready: .venv/bin/avloc"
