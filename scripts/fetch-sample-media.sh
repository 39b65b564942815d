#!/usr/bin/env bash
# Fetch the real sample media used by tests and docs from Debian's package archive.
#
#   bash scripts/fetch-sample-media.sh            # into ${VIDEOPOET_SAMPLES:-~/.cache/videopoet/samples}
#   VIDEOPOET_SAMPLES=/tmp/s bash scripts/fetch-sample-media.sh
#
# Needs only `apt-get download` (the package archive, no other network) and `dpkg-deb`.
# Idempotent: a complete cache (marker file present) is left alone. The cache is built in a
# temporary folder beside the target and renamed into place, so it is never half written.
# Nothing lands in the repository.
#
#   video/cockatoo.mp4      python3-imageio: 1280x720, 20 fps, 14 s, no sound
#   video/realshort.mp4     python3-imageio: 320x240, 1.2 s, real sound
#   speech/*.wav            asterisk-core-sounds-en-wav: speech (8 kHz), CC-BY-SA-3.0
#   speech/transcripts.txt  asterisk-core-sounds-en: what each clip says ("name: text")
#   music/*.flac            sonic-pi-samples: music loops, instruments and drums (CC0)
set -euo pipefail

VERSION=1
TARGET="${VIDEOPOET_SAMPLES:-$HOME/.cache/videopoet/samples}"
MARKER="$TARGET/.complete-v$VERSION"
PACKAGES=(python3-imageio asterisk-core-sounds-en-wav asterisk-core-sounds-en sonic-pi-samples)

if [[ -f "$MARKER" ]]; then
    echo "sample media already in $TARGET"
    exit 0
fi
for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (needs a Debian/Ubuntu system)" >&2; exit 1; }
done

mkdir -p "$(dirname "$TARGET")"
# Staging beside the target (same file system: the final rename is atomic); downloads in a
# world-readable temp folder so apt's sandbox user can write them when run as root.
WORK="$(mktemp -d "$(dirname "$TARGET")/.samples-fetch.XXXXXX")"
DEBS="$(mktemp -d)"
trap 'rm -rf "$WORK" "$DEBS"' EXIT
chmod 755 "$DEBS"
mkdir -p "$WORK/x" "$WORK/out/video" "$WORK/out/speech" "$WORK/out/music"

download() {
    (cd "$DEBS" && apt-get download -q "${PACKAGES[@]}")
}
if ! download; then
    # A fresh container has no package lists yet; refresh them once when we may.
    if [[ "$(id -u)" == 0 ]]; then
        apt-get update -q && download
    else
        echo "error: apt-get download failed; run 'sudo apt-get update' and retry" >&2
        exit 1
    fi
fi

for deb in "$DEBS"/*.deb; do
    dpkg-deb -x "$deb" "$WORK/x"
done

X="$WORK/x/usr"
cp "$X"/lib/python3/dist-packages/imageio/resources/images/{cockatoo,realshort}.mp4 "$WORK/out/video/"
cp "$X"/share/doc/python3-imageio/copyright "$WORK/out/video/COPYRIGHT"

# Top-level prompts only: the digit/letter folders hold single words, too short to be useful.
find "$X/share/asterisk/sounds/en_US_f_Allison" -maxdepth 1 -name '*.wav' -exec cp -t "$WORK/out/speech/" {} +
zcat "$X/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz" > "$WORK/out/speech/transcripts.txt"
cp "$X"/share/doc/asterisk-core-sounds-en-wav/copyright "$WORK/out/speech/COPYRIGHT"

cp "$X"/share/sonic-pi/samples/*.flac "$WORK/out/music/"
cp "$X"/share/sonic-pi/samples/README.md "$WORK/out/music/README.md"
cp "$X"/share/doc/sonic-pi-samples/copyright "$WORK/out/music/COPYRIGHT"

touch "$WORK/out/.complete-v$VERSION"
rm -rf "$TARGET"
mv "$WORK/out" "$TARGET"
echo "sample media in $TARGET: $(find "$TARGET/video" -name '*.mp4' | wc -l) videos," \
    "$(find "$TARGET/speech" -name '*.wav' | wc -l) speech clips," \
    "$(find "$TARGET/music" -name '*.flac' | wc -l) music samples"
