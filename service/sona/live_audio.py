"""A live session's audio, as it arrives: PCM16 bytes → 16 kHz float32
samples, and the turns in them (server VAD). Pure numpy, streaming: state is
carried from one frame to the next, so the result does not depend on how the
client cut its frames.

The turn detector works on loudness, not on Silero (the daemon never loads
the engine's libraries): a 20 ms frame is speech when it stands out of the
noise floor it tracks by a margin that ``threshold`` sets. It only finds
where a turn starts and ends; the engine then cuts the turn into speech with
Silero as it does a file (``engine/child.py``), so a loose boundary costs
nothing but a little silence."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

RATE = 16_000  # what the engine decodes
FRAME = RATE // 50  # 20 ms


def pcm16(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit samples as float32 in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def _lowpass(taps: int, cutoff: float) -> np.ndarray:
    """A Kaiser-windowed sinc, ``cutoff`` a fraction of the sample rate."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, 8.0)
    return (h / h.sum()).astype(np.float32)


@dataclass
class Resampler:
    """24 kHz → 16 kHz (up 2, low-pass at 7.6 kHz, down 3), or 16 kHz as is."""

    rate: int = 24_000
    _taps: np.ndarray = field(default_factory=lambda: 2 * _lowpass(121, 7_600 / 48_000))
    _history: np.ndarray = field(default_factory=lambda: np.zeros(120, np.float32))
    _pos: int = 0  # samples at 48 kHz seen so far

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self.rate == RATE:
            return samples
        up = np.zeros(2 * samples.size, np.float32)
        up[::2] = samples
        joined = np.concatenate([self._history, up])
        filtered = np.convolve(joined, self._taps, mode="valid")
        out = filtered[(-self._pos) % 3 :: 3]
        self._pos += up.size
        self._history = joined[-(self._taps.size - 1) :]
        return out.astype(np.float32)


@dataclass(frozen=True)
class VadEvent:
    """Speech started or stopped at ``sample`` (16 kHz, counted from the
    session's first sample); a start includes the prefix padding."""

    kind: str  # "started" | "stopped"
    sample: int


@dataclass
class TurnDetector:
    """Server VAD over loudness. ``threshold`` (0–1, OpenAI's 0.5 by default)
    sets how far above the noise floor speech must be: 6 dB at 0, 26 dB at 1
    (6 dB less to stay in speech than to start it). The floor is the level of
    the quietest 5 % of the last 2 s (a quiet room's -60 dBFS until then), so
    steady noise becomes the floor within seconds; during speech it rises by
    1 dB a second at most, so a long sentence does not lift its own floor
    and end at its next pause. Noise louder than the assumed floor at a
    session's start is one false turn (the engine finds no speech in it)
    until the floor has risen to it. Speech starts after 60 ms of loud
    frames and stops after ``silence_ms`` of quiet ones."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_ms: int = 500
    _levels: deque[float] = field(default_factory=lambda: deque([-60.0] * 5, maxlen=100))
    _floor: float = -60.0
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    _seen: int = 0  # samples consumed, in whole frames
    _speaking: bool = False
    _loud: int = 0  # loud frames in a row
    _quiet: int = 0  # quiet frames in a row

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        frames = np.concatenate([self._pending, samples])
        whole = frames.size // FRAME * FRAME
        self._pending = frames[whole:]
        events = []
        for start in range(0, whole, FRAME):
            event = self._frame(frames[start : start + FRAME])
            self._seen += FRAME
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: np.ndarray) -> VadEvent | None:
        db = 10 * np.log10(float(np.mean(frame * frame)) + 1e-10)
        floor = max(float(np.percentile(self._levels, 5)), -70.0)
        if self._speaking:  # a long sentence must not raise its own floor
            floor = min(floor, self._floor + 0.02)  # 1 dB a second at most
        self._floor = floor
        self._levels.append(db)
        margin = 6 + 20 * self.threshold - (6 if self._speaking else 0)
        loud = db > floor + margin and db > -55.0
        self._loud = self._loud + 1 if loud else 0
        self._quiet = 0 if loud else self._quiet + 1
        if not self._speaking and self._loud >= 3:
            self._speaking = True
            onset = self._seen + FRAME - 3 * FRAME
            return VadEvent("started", max(0, onset - self.prefix_padding_ms * RATE // 1000))
        if self._speaking and self._quiet * 20 >= self.silence_ms:
            self._speaking = False
            return VadEvent("stopped", self._seen + FRAME)
        return None
