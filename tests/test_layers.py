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
    "queue": 2,
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


def test_the_service_layer_knows_no_http() -> None:
    # queue.py is what routes, the CLI and the MCP layer call: HTTP stays in api/.
    assert not [n for n in _imports(ROOT / "queue.py") if n.split(".")[0] == "aiohttp"]


# api/ modules that hold no routes: what handler modules share. A handler module
# (one with a ``routes`` table) may import these, never another handler module, so
# that what two routes share has one home below them. routes.py is the one place
# that gathers every handler's table, so it alone imports them all.
API_SHARED = {
    "errors",  # domain errors -> HTTP statuses, OpenAI-shaped bodies
    "schemas",  # declared request/response models, job_out/model_out
    "openai_schemas",  # OpenAIForm, LanguageForm/Out: read by their handlers, shown by openapi.py
    "forms",  # reading multipart and JSON bodies
    "json_input",  # bounded JSON parsing
    "limits",  # upload slots, rate limits
    "middleware",  # auth, request ids, open paths
    "connections",  # connection limits and timeouts
    "bodies",  # the body watchdog middleware (one idle timeout over every body read)
    "sse",  # SSE frames, segment/progress payloads, client-gone check
    "job_requests",  # a submission read and admitted, a job by path, its transcript
}
API_GATHERER = "routes"


def _api_modules() -> dict[str, Path]:
    return {p.stem: p for p in (ROOT / "api").glob("*.py") if p.stem != "__init__"}


def _has_routes(path: Path) -> bool:
    return "RouteTableDef" in path.read_text()


def test_api_modules_are_handlers_or_shared() -> None:
    # A new api/ module is classified here on purpose, not by accident.
    for name, path in _api_modules().items():
        if name in API_SHARED or name == API_GATHERER:
            assert not _has_routes(path), f"api/{name}.py is shared, yet holds routes"
        else:
            assert _has_routes(path), f"api/{name}.py holds no routes: add it to API_SHARED"


def test_no_handler_module_imports_another() -> None:
    modules = _api_modules()
    handlers = {n for n in modules if n not in API_SHARED and n != API_GATHERER}
    for name, path in modules.items():
        if name == API_GATHERER:
            continue
        for imported in _imports(path):
            parts = imported.split(".")
            if parts[:2] == ["sona", "api"] and len(parts) > 2:
                assert parts[2] not in handlers, f"api/{name}.py imports handler {imported}"


def _calls(path: Path, method: str) -> list[str]:
    """The receivers of every ``<receiver>.<method>(...)`` call in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and func.attr == method:
            found.append(ast.unparse(func.value))
    return found


def test_every_path_admits_and_cancels_through_the_service_layer() -> None:
    # The HTTP API and `sona transcribe` (local.py) alike, so that the wake-up after
    # a job is queued and the stop sent to a cancelled job's worker exist once.
    admitters = []
    for path in _modules():
        rel = path.relative_to(ROOT)
        if rel == Path("queue.py"):
            continue
        for receiver in _calls(path, "admit"):
            assert receiver == "queue", f"{rel} admits through {receiver}, not sona.queue"
            admitters.append(rel.parts[0])
        stores = [r for r in _calls(path, "cancel") if "store" in r.lower()]
        assert not stores, f"{rel} cancels through {stores}, not sona.queue"
        for method in ("job_queued", "cancel_requested"):
            assert not _calls(path, method), f"{rel} calls {method}, not sona.queue"
    assert {"local.py", "api"} <= set(admitters)
