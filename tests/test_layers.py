"""The layering of docs/architecture.md, checked by walking imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).parent.parent
ROOT = REPO / "service" / "sona"
MCP_ROOT = REPO / "mcp_tools" / "sona_mcp"

# Lower number = lower layer. A module may import only its own layer or below.
LAYER = {
    "errors": 0,
    "settings": 0,
    "jobs": 0,
    "crashpoints": 0,
    "wire": 0,
    "realtime_events": 0,
    "textsearch": 0,
    "store": 1,
    "engine": 1,
    "uploads": 1,
    "datadir": 1,
    "audio": 1,
    "formats": 1,
    "transcript_shapes": 1,
    "captions": 1,
    "metrics": 1,
    "logs": 1,
    "loop_errors": 1,
    "signals": 1,
    "events": 1,
    "notify": 1,
    "fetch": 1,
    "netguard": 1,
    "live_audio": 1,
    "worker": 2,
    "worker_config": 2,
    "admission": 2,
    "flight": 2,
    "leases": 2,
    "loops": 2,
    "opening": 2,
    "endings": 2,
    "standing": 2,
    "webhooks": 2,
    "dispatcher": 2,
    "intake": 2,
    "queue": 2,
    "live": 2,
    "live_record": 2,
    "live_partial": 1,
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


# The engine's ML libraries: the daemon must not load them (an API node holds
# no model; a worker node holds them in its engine process only).
ENGINE_LIBS = ("faster_whisper", "ctranslate2")
# Modules that may reach them at import time: the backend, and the process
# that drives it (imported inside the spawned child only, by engine/entry.py).
ENGINE_SIDE = {"engine/whisper.py", "engine/child.py"}


def _import_time_names(path: Path) -> list[str]:
    """What importing ``path`` imports: module-level statements, not those in a
    function (a lazy import) or under ``if TYPE_CHECKING``."""
    names: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
                names.extend(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.extend(a.name for a in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)

    visit(ast.parse(path.read_text()).body)
    return names


def _reaches_engine_libs(start: Path) -> list[str]:
    """The chain of imports from ``start`` to faster_whisper or ctranslate2, if any."""
    seen = {start}
    todo = [(start, [str(start.relative_to(ROOT))])]
    while todo:
        path, chain = todo.pop()
        for name in _import_time_names(path):
            if name.split(".")[0] in ENGINE_LIBS:
                return [*chain, name]
            parts = name.split(".")
            # A package's __init__ runs before any of its modules.
            for n in range(2, len(parts) + 1):
                target = _module_path(".".join(parts[:n]))
                if target is not None and target not in seen:
                    seen.add(target)
                    todo.append((target, [*chain, str(target.relative_to(ROOT))]))
    return []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_engine_side_loads_faster_whisper(path: Path) -> None:
    """Transitively: a module that imports one that imports faster_whisper loads
    it too."""
    chain = _reaches_engine_libs(path)
    if str(path.relative_to(ROOT)) in ENGINE_SIDE:
        assert path.name == "child.py" or chain, f"{path} no longer loads the engine?"
    else:
        assert not chain, " -> ".join(chain)


def test_only_whisper_imports_faster_whisper() -> None:
    for path in _modules():
        if any(n.split(".")[0] in ENGINE_LIBS for n in _import_time_names(path)):
            assert path == ROOT / "engine" / "whisper.py", path


def test_an_api_node_never_loads_the_engine_libraries(daemon_factory: Any) -> None:
    """``sona serve --no-worker`` from start to a clean exit, a request served:
    Python's import log (``-X importtime``, every module the process imported,
    lazily or not) names neither library."""
    d = daemon_factory("--no-worker", env={"PYTHONPROFILEIMPORTTIME": "1"})
    with httpx.Client(base_url=d.url, timeout=30) as client:
        assert client.get("/v1/jobs").status_code == 200
        assert client.get("/ready").status_code == 200
    assert d.stop() == 0
    imported = {
        line.split("|")[-1].strip()
        for line in d.stderr().splitlines()
        if line.startswith("import time:")
    }
    assert {"sona.app", "sona.cli", "sona.engine", "aiohttp.web"} <= imported  # the log is read
    loaded = sorted(m for m in imported if m.split(".")[0] in ENGINE_LIBS)
    assert not loaded, loaded


def test_importing_the_app_leaves_the_engine_libraries_out() -> None:
    """A fresh interpreter, as a parent application embedding the daemon has."""
    code = (
        "import sys, sona.app, sona.cli, sona.runtime, sona.engine.host, sona.engine.registry;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {ENGINE_LIBS!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_only_api_and_app_import_aiohttp_web() -> None:
    for path in _modules():
        rel = path.relative_to(ROOT)
        if "aiohttp.web" in _imports(path):
            assert rel.parts[0] in ("api", "app.py", "node.py", "keys.py"), rel


def test_mcp_tools_use_only_the_client() -> None:
    for path in MCP_ROOT.rglob("*.py"):
        for name in _imports(path):
            if name.split(".")[0] == "sona":
                assert name.startswith(("sona.client", "sona.wire")), f"{path.name} imports {name}"


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
    "route_docs",  # each route's documentation, read by openapi.py
    "search_schemas",  # GET /v1/search's answer, for the route and the spec
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


def test_the_wire_module_imports_nothing() -> None:
    """client.py and sona_mcp read it without loading the daemon (or anything)."""
    names = _imports(ROOT / "wire.py")
    assert names == ["__future__", "__future__.annotations"], names


def _module_path(dotted: str) -> Path | None:
    """Where ``dotted`` lives if the source roots (service/, mcp_tools/) are the
    import roots: the file a reader or a tool finds from the import alone."""
    for root in (REPO / "service", REPO / "mcp_tools"):
        base = root.joinpath(*dotted.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def test_the_tree_is_what_python_imports() -> None:
    """Every first-party import names a file at that path under a source root
    (no symlinks, no renaming map), and the installed packages are those files."""
    import sona
    import sona_mcp

    assert Path(sona.__file__).parent == ROOT and Path(sona_mcp.__file__).parent == MCP_ROOT
    for path in [*_modules(), *MCP_ROOT.rglob("*.py")]:
        for name in _imports(path):
            if name.split(".")[0] in ("sona", "sona_mcp"):
                # `from sona.x import y` lists "sona.x.y": y may be a name, not a module
                assert _module_path(name) or _module_path(name.rpartition(".")[0]), (path, name)
    tracked = subprocess.run(
        ["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert not [line for line in tracked if line.startswith("120000")], "symlinks in the tree"


def _module_map() -> list[Path]:
    """The paths docs/architecture.md's module map names, in order: the first
    cell of each row, where a bare name (`__main__.py`) sits beside the path
    before it in the same cell."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed: list[Path] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        base = Path()
        for name in line.split("|")[1].replace("`", "").split(","):
            path = Path(name.strip())
            if len(path.parts) > 1:
                base = path.parent
            else:
                path = base / path
            listed.append(path)
    return listed


def test_the_module_map_is_the_tree() -> None:
    """Every module of sona and sona_mcp is in docs/architecture.md's map once,
    and the map names nothing that is not there (a package's empty
    ``__init__.py`` needs no row)."""
    listed = _module_map()
    twice = sorted({str(p) for p in listed if listed.count(p) > 1})
    assert not twice, f"listed more than once: {twice}"
    missing = [str(p) for p in listed if not (REPO / p).exists()]
    assert not missing, f"the module map names what is not in the tree: {missing}"
    tree = [
        p.relative_to(REPO)
        for p in [*ROOT.rglob("*.py"), *MCP_ROOT.rglob("*.py")]
        if p.name != "__init__.py" or len(p.read_text().splitlines()) > 5
    ]
    unlisted = sorted(str(p) for p in tree if p not in listed)
    assert not unlisted, f"modules missing from docs/architecture.md's module map: {unlisted}"
