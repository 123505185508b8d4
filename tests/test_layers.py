"""The layering of docs/architecture.md, checked by walking imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "service"

# Lower number = lower layer. A module may import only its own layer or below.
LAYER = {
    "errors": 0,
    "settings": 0,
    "jobs": 0,
    "crashpoints": 0,
    "store": 1,
    "engine": 1,
    "uploads": 1,
    "datadir": 1,
    "audio": 1,
    "formats": 1,
    "captions": 1,
    "metrics": 1,
    "logs": 1,
    "loop_errors": 1,
    "signals": 1,
    "events": 1,
    "notify": 1,
    "fetch": 1,
    "netguard": 1,
    "worker": 2,
    "standing": 2,
    "webhooks": 2,
    "dispatcher": 2,
    "intake": 2,
    "runtime": 3,
    "startup": 3,
    "keys": 4,
    "api": 4,
    "client": 4,
    "sidecar": 4,
    "app": 5,
    "node": 5,
    "cli": 5,
    "local": 5,
    "remote": 5,
    "progress": 5,
    "__main__": 5,
}


def _modules() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT]


def _layer_of(dotted: str) -> int | None:
    parts = dotted.split(".")
    if parts[0] != "sona" or len(parts) < 2:
        return None
    return LAYER.get(parts[1])


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_down(path: Path) -> None:
    rel = path.relative_to(ROOT).with_suffix("")
    own = LAYER[rel.parts[0]]
    for name in _imports(path):
        layer = _layer_of(name)
        assert layer is None or layer <= own, f"{rel} (L{own}) imports {name} (L{layer})"
        if rel.parts[0] in ("store", "engine") and name.startswith("sona."):
            other = name.split(".")[1]
            assert {rel.parts[0], other} != {"store", "engine"}, f"{rel} imports {name}"


def test_only_whisper_imports_faster_whisper() -> None:
    for path in _modules():
        if any(n.startswith("faster_whisper") for n in _imports(path)):
            assert path == ROOT / "engine" / "whisper.py", path


def test_only_api_and_app_import_aiohttp_web() -> None:
    for path in _modules():
        rel = path.relative_to(ROOT)
        if "aiohttp.web" in _imports(path):
            assert rel.parts[0] in ("api", "app.py", "node.py", "keys.py"), rel


def test_mcp_tools_use_only_the_client() -> None:
    for path in (ROOT.parent / "mcp_tools").rglob("*.py"):
        for name in _imports(path):
            if name.split(".")[0] == "sona":
                assert name.startswith("sona.client"), f"{path.name} imports {name}"
