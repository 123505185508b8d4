"""Model residency: resolution, LRU budget, idle TTL, unload (B6). The engine
here is a stand-in that records loads; loading the real model in the engine
process is covered by test_daemon and test_engine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sona.engine.registry import ModelRegistry
from sona.errors import ModelNotFound


class CountingEngine:
    """Records what the registry asks the engine process to load and free."""

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.closed: list[str] = []

    async def load(self, name: str, path: Path) -> None:
        await asyncio.sleep(0.01)  # concurrent loads overlap here
        self.loaded.append(name)

    async def unload(self, name: str) -> None:
        self.closed.append(name)


def model_dir(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "model.bin").write_bytes(b"x")
    (d / "config.json").write_text("{}")
    return d


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ModelRegistry, CountingEngine, Path]:
    cache = tmp_path / "models"
    for n in ("a", "b", "c"):
        model_dir(cache, n)
    engine = CountingEngine()
    return (
        ModelRegistry(
            engine,  # type: ignore[arg-type]
            model_dir=cache,
            allow_download=False,
            max_loaded=2,
            idle_ttl_s=0.1,
        ),
        engine,
        cache,
    )


async def test_lru_evicts_least_recently_used(setup: Any) -> None:
    reg, engine, _ = setup
    await reg.load("a")
    await reg.load("b")
    await reg.load("a")  # a is now the most recent
    await reg.load("c")
    assert [e.id for e in reg.entries()] == ["a", "c"] and engine.closed == ["b"]


async def test_busy_model_is_not_evicted(setup: Any) -> None:
    reg, engine, _ = setup
    busy = await reg.acquire("a")
    await reg.load("b")
    await reg.load("c")
    assert "a" in [e.id for e in reg.entries()]
    reg.release(busy)


async def test_concurrent_loads_load_once(setup: Any) -> None:
    reg, engine, _ = setup
    await asyncio.gather(*(reg.load("a") for _ in range(5)))
    assert engine.loaded == ["a"]


async def test_idle_ttl_unloads(setup: Any) -> None:
    reg, engine, _ = setup
    await reg.load("a")
    await asyncio.sleep(0.2)
    assert await reg.unload_idle() == ["a"] and reg.entries() == []


async def test_resolution_paths_cache_bundled_and_refusal(setup: Any, tmp_path: Path) -> None:
    reg, _, cache = setup
    direct = model_dir(tmp_path / "elsewhere", "mine")
    assert await reg.locate(str(direct)) == direct
    assert await reg.locate("b") == cache / "b"
    assert (await reg.locate("tiny.en") / "model.bin").is_file()  # the bundled package
    with pytest.raises(ModelNotFound, match="not available offline"):
        await reg.locate("large-v3")
    with pytest.raises(ModelNotFound):
        await reg.locate(str(tmp_path))  # a directory without model.bin
    assert await reg.unload("never-loaded") is False


async def test_relative_directory_path_resolves(
    setup: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    reg, _, _ = setup
    model_dir(tmp_path / "here", "rel-model")
    monkeypatch.chdir(tmp_path / "here")
    assert reg.canonical("rel-model") == str((tmp_path / "here" / "rel-model").resolve())
    assert (await reg.locate(reg.canonical("rel-model"))).name == "rel-model"
