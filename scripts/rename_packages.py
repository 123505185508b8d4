"""One-off: install the code as ``sona`` (and ``sona_mcp``) instead of the
top-level ``service`` and ``mcp_tools``, keeping the repository layout.

Run once from the repository root, on a clean tree, after every branch that
still imports ``service`` has been merged:

    python scripts/rename_packages.py            # rewrite in place
    python scripts/rename_packages.py --check    # list what would change, exit 1 if any

What it does (see docs/deployment.md, "Import names"):

* pyproject.toml: ``[tool.setuptools] package-dir`` maps ``sona`` → ``service/``
  and ``sona_mcp`` → ``mcp_tools/``; the package list, package data, the
  ``sona`` script entry point, mypy's packages and ruff's first-party names
  follow.
* Python files under service/, mcp_tools/, tests/, scripts/: ``import``/``from``
  statements, ``-m service`` / ``-m mcp_tools`` in command lists, and module
  names in strings and double-backtick references (``"service.cli"``,
  ````service.client````). Paths to the source directories (``/ "service"``,
  ``service/api/…`` in prose) stay as they are: the layout does not change.
* Markdown: ``python -m service``/``mcp_tools`` and ``from service.`` examples.
* A ``sona`` and a ``sona_mcp`` symlink at the root, for tools that read the
  tree without installing it (mypy; ``python -m pytest`` without an install).

Afterwards: ``pip install -e '.[dev]'`` again (the editable finder changes).

Proven on a copy of the ops branch (fresh venv, everything below from the root):
``pip install -e .`` (setuptools' default editable mode installs a finder that
maps the names; no symlink needed for Python itself); pytest on test_layers,
test_engine (the engine child is spawned and imports ``sona.engine.child``),
test_cli, test_startup, test_metrics, test_sidecar, test_mcp, test_packaging,
test_deploy; ``ruff check`` and ``ruff format --check`` (after the import-order
fix this script runs); ``python -m build`` (sdist, then the wheel from it: the
wheel holds only ``sona/``, ``sona_mcp/`` and the dist-info), the wheel
installed in a clean venv serves (``sona serve`` → ready line), ``python -m
sona_mcp`` runs, ``import service`` fails there. mypy does not follow the
editable finder ("Can't find package 'sona'"); the root symlinks fix that.
``editable_mode=strict`` would instead need a ``py.typed`` marker and report
paths inside build/, so it is not used. On Windows, a checkout needs
``core.symlinks`` for the links (only mypy needs them).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = {"service": "sona", "mcp_tools": "sona_mcp"}
PY_DIRS = ("service", "mcp_tools", "tests", "scripts")
SKIP = {Path(__file__).resolve()}

_OLD = "|".join(NAMES)
# Each rule's group ``name`` is the old package name; only it is replaced.
PY_RULES = [
    # import service / import service.x / from service(.x) import …
    re.compile(rf"^\s*(?:from|import)\s+(?P<name>{_OLD})(?=[\s.])", re.M),
    # "-m", "service" in subprocess command lists
    re.compile(rf"""["']-m["'],\s*["'](?P<name>{_OLD})["']"""),
    # "service" / "service.x" as a whole string (module names), not path joins (/ "service")
    re.compile(rf"""(?<!/ )["'](?P<name>{_OLD})(?:\.[\w.]*)?["']"""),
    # ``service.client`` in docstrings and comments
    re.compile(rf"``(?P<name>{_OLD})(?:\.[\w.]+)?``"),
    # "python -m mcp_tools" in usage strings and docstrings
    re.compile(rf"python -m (?P<name>{_OLD})\b"),
]
MD_RULES = [
    re.compile(rf"python -m (?P<name>{_OLD})\b"),
    re.compile(rf"\b(?:from|import) (?P<name>{_OLD})(?=[\s.])"),
    # `service.sidecar.serve()` in prose; `service/app.py` (a path) stays
    re.compile(rf"`(?P<name>{_OLD})\.\w"),
]


def _apply(text: str, rules: list[re.Pattern[str]]) -> str:
    def swap(m: re.Match[str]) -> str:
        start, end = m.start("name") - m.start(), m.end("name") - m.start()
        whole = m.group(0)
        return whole[:start] + NAMES[m["name"]] + whole[end:]

    for pattern in rules:
        text = pattern.sub(swap, text)
    return text


def _packages() -> list[str]:
    """Every folder of service/ and mcp_tools/ under its installed name (static/
    included: setuptools wants data folders that Python could import listed)."""
    names = []
    for old, new in NAMES.items():
        for folder in sorted(p for p in (ROOT / old).rglob("*") if p.is_dir()):
            if folder.name != "__pycache__":
                names.append(".".join([new, *folder.relative_to(ROOT / old).parts]))
        names.append(new)
    return sorted(names)


def _pyproject_edits() -> list[tuple[str, str]]:
    packages = "".join(f'    "{name}",\n' for name in _packages())
    return [
        ('sona = "service.cli:main"', 'sona = "sona.cli:main"'),
        (
            '[tool.setuptools.packages.find]\ninclude = ["service*", "mcp_tools*"]\n',
            "# The repository keeps service/ and mcp_tools/; they install as sona and\n"
            "# sona_mcp (scripts/rename_packages.py). A new subpackage is listed here.\n"
            "[tool.setuptools]\n"
            'package-dir = { "sona" = "service", "sona_mcp" = "mcp_tools" }\n'
            f"packages = [\n{packages}]\n",
        ),
        ("[tool.setuptools.package-data]\nservice = [", "[tool.setuptools.package-data]\nsona = ["),
        ('packages = ["service", "mcp_tools"]', 'packages = ["sona", "sona_mcp"]'),
        (
            "[tool.ruff.lint]\n",
            '[tool.ruff.lint.isort]\nknown-first-party = ["sona", "sona_mcp", "tests"]\n\n'
            "[tool.ruff.lint]\n",
        ),
    ]


def rewrite_pyproject(text: str) -> str:
    for old, new in _pyproject_edits():
        if old not in text:
            raise SystemExit(f"pyproject.toml: expected text not found:\n{old}")
        text = text.replace(old, new)
    return text


def planned() -> dict[Path, str]:
    changes: dict[Path, str] = {}
    for folder in PY_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.resolve() in SKIP:
                continue
            old = path.read_text()
            new = _apply(old, PY_RULES)
            if new != old:
                changes[path] = new
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        old = path.read_text()
        new = _apply(old, MD_RULES)
        if new != old:
            changes[path] = new
    pyproject = ROOT / "pyproject.toml"
    changes[pyproject] = rewrite_pyproject(pyproject.read_text())
    return changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list the files, change nothing")
    args = parser.parse_args()
    if (ROOT / "sona").exists() and not (ROOT / "sona").is_symlink():
        raise SystemExit("a real sona/ directory exists: refusing to run")
    changes = planned()
    for path in changes:
        print(path.relative_to(ROOT))
    if args.check:
        return 1 if changes else 0
    for path, text in changes.items():
        path.write_text(text)
    for old, new in NAMES.items():
        link = ROOT / new
        if not link.is_symlink():
            link.symlink_to(old, target_is_directory=True)
    # `sona` now sorts before `sona_mcp`, where `mcp_tools` sorted before `service`.
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff:
        subprocess.run([ruff, "check", "-q", "--select", "I", "--fix", *PY_DIRS], cwd=ROOT)
    else:
        print("ruff not found: run `ruff check --select I --fix` yourself", file=sys.stderr)
    print(f"{len(changes)} files rewritten; now: pip install -e '.[dev]'", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
