#!/usr/bin/env python3
"""Render a recording of many voices from known sentences, with its reference.

    python scripts/make_speech_mix.py OUT.wav [--minutes 6] [--seed 1] [--handover]

Sentences (the Harvard sentences, public domain, and the repository's test
clips' text) are spoken by espeak-ng voices at several rates, the voice
changing every sentence or two, with pauses of 0.2 to 1.5 s between them:
speech unlike the test clips the engine's thresholds were checked on, and
full of voice handovers, where a small Whisper model tends to end a window
early. Writes OUT.wav (16 kHz mono 16-bit) and OUT.json: the whole
reference text and each sentence's text, voice and time span.

The same arguments always give the same file on one espeak-ng version, so
a benchmark builds its long file at run time instead of committing it.
Needs espeak-ng and sox.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import wave
from pathlib import Path

RATE = 16_000

VOICES = ("en-us", "en-us+f2", "en+m3", "en-gb", "en+f4", "en-gb-scotland", "en+m7", "en-us+f3")
RATES = (130, 145, 160, 175)

SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
    "A king ruled the state in the early days.",
    "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.",
    "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.",
    "Lift the square stone over the fence.",
    "The rope will bind the seven books at once.",
    "Hop over the fence and plunge in.",
    "The friendly gang left the drug store.",
    "Mesh wire keeps chicks inside.",
    "The frosty air passed through the coat.",
    "The crooked maze failed to fool the mouse.",
    "Adding fast leads to wrong sums.",
    "The show was a flop from the very start.",
    "A saw is a tool used for making boards.",
    "The wagon moved on well oiled wheels.",
    "March the soldiers past the next hill.",
    "A cup of sugar makes sweet fudge.",
    "Place a rosebush near the porch steps.",
    "Both lost their lives in the raging storm.",
    "Please send the quarterly report to the finance team before Friday.",
    "The weather today is sunny and warm, with a light breeze from the west.",
    "The library has twenty books, fifteen maps, and three old computers.",
    "The meeting has been moved to the large conference room on the third floor.",
)


def speak(text: str, voice: str, wpm: int, work: Path) -> bytes:
    """16 kHz mono 16-bit frames of ``text``, espeak-ng's own silences trimmed."""
    raw, out = work / "raw.wav", work / "out.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", "-V1", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)]
        + ["silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"],
        check=True,
    )
    with wave.open(str(out), "rb") as w:
        return w.readframes(w.getnframes())


# A voice handover on which tiny.en, decoding without timestamps, ended its
# 20 s window after the first sentence (``tests/audio/handover.flac``):
# (voice, words per minute, text, seconds of silence before it).
HANDOVER = (
    ("en-gb", 145, "Rice is often served in round bowls.", 0.388),
    ("en-us+f3", 130, "These days a chicken leg is a rare dish.", 1.371),
    ("en-us+f3", 130, SENTENCES[-1], 1.382),
    ("en-gb-scotland", 130, "Two blue fish swam in the tank.", 0.647),
    ("en-us+f3", 145, "A large size in stockings is hard to sell.", 1.382),
)
HANDOVER_TRAIL_S = 0.682


def mixed(minutes: float, seed: int) -> list[tuple[str, int, str, float]]:
    """A random script about ``minutes`` long: the voice changes every sentence or two."""
    rng = random.Random(seed)
    order = list(SENTENCES)
    rng.shuffle(order)
    script, voice, left, wpm = [], rng.choice(VOICES), 0, RATES[0]
    # About 2.8 s a sentence with its pause; the rendered length is what it is.
    for n in range(int(minutes * 60 / 2.8) + 1):
        if left == 0:  # a handover: another voice, for one or two sentences
            voice = rng.choice([v for v in VOICES if v != voice])
            wpm, left = rng.choice(RATES), rng.choice((1, 2))
        script.append((voice, wpm, order[n % len(order)], 0.0 if n == 0 else rng.uniform(0.2, 1.5)))
        left -= 1
    return script


def render(out: Path, script: list[tuple[str, int, str, float]], trail_s: float) -> dict:
    """``script`` spoken into ``out``; the reference: its text and each sentence's span."""
    frames, spans, at = bytearray(), [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for voice, wpm, text, pause in script:
            gap = int(pause * RATE)
            frames += bytes(2 * gap)
            at += gap
            speech = speak(text, voice, wpm, Path(tmp))
            start = at / RATE
            at += len(speech) // 2
            spans.append({"text": text, "voice": voice, "wpm": wpm, "start": round(start, 3),
                          "end": round(at / RATE, 3)})  # fmt: skip
            frames += speech
    frames += bytes(2 * int(trail_s * RATE))
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))
    return {
        "text": " ".join(s["text"] for s in spans),
        "duration_s": round(len(frames) / 2 / RATE, 3),
        "sentences": spans,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--handover", action="store_true", help="render HANDOVER instead")
    args = ap.parse_args()
    if args.handover:
        ref = render(args.out, list(HANDOVER), HANDOVER_TRAIL_S)
    else:
        ref = {**render(args.out, mixed(args.minutes, args.seed), 0.5), "seed": args.seed}
    args.out.with_suffix(".json").write_text(json.dumps(ref, indent=1) + "\n")


if __name__ == "__main__":
    main()
