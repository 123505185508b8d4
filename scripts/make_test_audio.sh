#!/usr/bin/env bash
# Render the test audio in tests/audio from known sentences, and write
# tests/audio/manifest.json (text, duration, keywords) beside it.
#
# The outputs are committed: rerun this only to change the set. Voice, rate
# and word gap were picked per sentence by transcribing with the bundled
# tiny.en model, and "keywords" lists only words it got right under beam sizes
# 1 and 5, with and without word timestamps and VAD, alone and inside the
# ~115 s concatenation tests/conftest.py builds. A different espeak-ng version
# renders slightly different audio, so re-check the keywords after regenerating.
#
# Needs espeak-ng and sox (soxi).
set -euo pipefail
export LC_ALL=C  # printf %.3f must write a decimal point, whatever the locale

OUT="$(cd "$(dirname "$0")/.." && pwd)/tests/audio"
RATE=16000
PAD=0.25  # seconds of silence each side, so no word starts at sample 0
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

# name|voice|words per minute|word gap (10 ms units)|keywords (space separated, lowercase)|text
# No double quotes or backslashes in the text: it goes into JSON unescaped.
MONO=(
  "fox.wav|en-us+f2|140|2|quick brown fox lazy dog|The quick brown fox jumps over the lazy dog. Then it runs back into the forest."
  "report.wav|en-us|160|0|quarterly report finance friday|Please send the quarterly report to the finance team before Friday."
  "weather.wav|en-us|160|0|weather sunny warm breeze west|The weather today is sunny and warm, with a light breeze from the west."
  "numbers.wav|en-us|150|0|library maps old computers|The library has twenty books, fifteen maps, and three old computers."
  "meeting.wav|en-us|150|0|meeting conference room third floor|The meeting has been moved to the large conference room on the third floor."
)
# voice|wpm|gap|keywords|text for each channel of stereo.wav: left speaks, then right.
LEFT="en-us|160|0|morning left side|Good morning from the left side."
RIGHT="en-us+f2|160|0|blue team right|The blue team answers on the right."

# speak VOICE WPM GAP TEXT OUT: 16 kHz mono 16-bit. No dither (-D): sox's is
# random, and a rerun should give byte-identical files. espeak-ng's own
# silences differ by sentence; trimming them and padding a fixed amount makes
# the speech boundaries predictable (and keeps stereo.wav under 300 KB).
speak() {
  espeak-ng -v "$1" -s "$2" -g "$3" -w "$WORK/raw.wav" "$4"
  sox -D "$WORK/raw.wav" -r "$RATE" -c 1 -b 16 "$5" \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse pad "$PAD" "$PAD"
}

seconds() { soxi -D "$1"; }

json_list() {  # "a b c" -> "a", "b", "c"
  local out="" w
  for w in $1; do out+="${out:+, }\"$w\""; done
  printf '%s' "$out"
}

entries=()
for row in "${MONO[@]}"; do
  IFS='|' read -r name voice wpm gap keywords text <<<"$row"
  speak "$voice" "$wpm" "$gap" "$text" "$OUT/$name"
  entries+=("$(printf '  "%s": {\n    "text": "%s",\n    "duration_s": %.3f,\n    "keywords": [%s]\n  }' \
    "$name" "$text" "$(seconds "$OUT/$name")" "$(json_list "$keywords")")")
done

# Stereo: each channel is silent while the other speaks, so a per-channel
# transcript holds exactly one sentence and the speaker order is known.
IFS='|' read -r lvoice lwpm lgap lkeys ltext <<<"$LEFT"
IFS='|' read -r rvoice rwpm rgap rkeys rtext <<<"$RIGHT"
speak "$lvoice" "$lwpm" "$lgap" "$ltext" "$WORK/left.wav"
speak "$rvoice" "$rwpm" "$rgap" "$rtext" "$WORK/right.wav"
ldur="$(seconds "$WORK/left.wav")"
rdur="$(seconds "$WORK/right.wav")"
sox -D "$WORK/left.wav" "$WORK/left_full.wav" pad 0 "$rdur"
sox -D "$WORK/right.wav" "$WORK/right_full.wav" pad "$ldur" 0
sox -D -M "$WORK/left_full.wav" "$WORK/right_full.wav" -b 16 "$OUT/stereo.wav"
# Speech spans exclude the padding: where a channel's segments should fall.
channel() {  # channel TEXT KEYWORDS SPEECH_START SPEECH_END
  printf '{\n      "text": "%s",\n      "keywords": [%s],\n      "speech_s": [%.3f, %.3f]\n    }' \
    "$1" "$(json_list "$2")" "$3" "$4"
}
total="$(seconds "$OUT/stereo.wav")"
left_json="$(channel "$ltext" "$lkeys" "$PAD" "$(awk "BEGIN{print $ldur - $PAD}")")"
right_json="$(channel "$rtext" "$rkeys" "$(awk "BEGIN{print $ldur + $PAD}")" \
  "$(awk "BEGIN{print $total - $PAD}")")"
entries+=("$(printf '  "stereo.wav": {\n    "duration_s": %.3f,\n    "left": %s,\n    "right": %s\n  }' \
  "$total" "$left_json" "$right_json")")

{
  printf '{\n'
  for i in "${!entries[@]}"; do
    printf '%s' "${entries[$i]}"
    if (( i < ${#entries[@]} - 1 )); then printf ',\n'; else printf '\n'; fi
  done
  printf '}\n'
} >"$OUT/manifest.json"

# handover.flac: five sentences, the voice changing between them, on which tiny.en
# decoding without timestamp tokens ended its window after the first sentence
# (tests/test_engine.py checks every sentence is kept). Its reference is
# handover.json, not the manifest: the manifest's files are same-format WAVs.
python3 "$(dirname "$0")/make_speech_mix.py" "$WORK/handover.wav" --handover
sox -D "$WORK/handover.wav" -C 8 "$OUT/handover.flac"
cp "$WORK/handover.json" "$OUT/handover.json"

ls -l "$OUT"
