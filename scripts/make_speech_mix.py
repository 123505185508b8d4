#!/usr/bin/env python3
"""Render a recording of many voices from known sentences, with its reference.

    python scripts/make_speech_mix.py OUT.wav [--minutes 6] [--seed 1]

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
        ["sox", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)]
        + ["silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"],
        check=True,
    )
    with wave.open(str(out), "rb") as w:
        return w.readframes(w.getnframes())


def render(out: Path, minutes: float, seed: int) -> dict:
    rng = random.Random(seed)
    order = list(SENTENCES)
    rng.shuffle(order)
    frames, spans, at = bytearray(), [], 0
    voice, left = rng.choice(VOICES), 0
    with tempfile.TemporaryDirectory() as tmp:
        n = 0
        while at < minutes * 60 * RATE:
            if left == 0:  # a handover: another voice, for one or two sentences
                voice = rng.choice([v for v in VOICES if v != voice])
                wpm, left = rng.choice(RATES), rng.choice((1, 2))
            text = order[n % len(order)]
            speech = speak(text, voice, wpm, Path(tmp))
            gap = int(rng.uniform(0.2, 1.5) * RATE)
            start = at / RATE
            at += len(speech) // 2
            spans.append({"text": text, "voice": voice, "wpm": wpm, "start": round(start, 3),
                          "end": round(at / RATE, 3)})  # fmt: skip
            frames += speech + bytes(2 * gap)
            at += gap
            n, left = n + 1, left - 1
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))
    return {
        "text": " ".join(s["text"] for s in spans),
        "duration_s": round(at / RATE, 3),
        "seed": seed,
        "sentences": spans,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    ref = render(args.out, args.minutes, args.seed)
    args.out.with_suffix(".json").write_text(json.dumps(ref, indent=1) + "\n")


if __name__ == "__main__":
    main()
