"""Settings: the environment a Kubernetes pod gets is accepted, a typo is not,
and docs/configuration.md's table is exactly the settings model."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo

from sona.errors import ConfigError
from sona.settings import Settings, check_environment, is_service_link
from tests.conftest import spawn_daemon

CONFIG_DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# What Kubernetes gives a pod for a Service named `sona` with a port named
# `http` (one variable per form).
SERVICE_LINKS = {
    "SONA_SERVICE_HOST": "10.96.0.17",
    "SONA_SERVICE_PORT": "8765",
    "SONA_SERVICE_PORT_HTTP": "8765",
    "SONA_PORT": "tcp://10.96.0.17:8765",
    "SONA_PORT_8765_TCP": "tcp://10.96.0.17:8765",
    "SONA_PORT_8765_TCP_ADDR": "10.96.0.17",
    "SONA_PORT_8765_TCP_PORT": "8765",
    "SONA_PORT_8765_TCP_PROTO": "tcp",
}


@pytest.mark.parametrize(("name", "value"), SERVICE_LINKS.items())
def test_each_service_link_form_is_ignored(name: str, value: str) -> None:
    assert is_service_link(name, value)
    check_environment({name: value})  # no ConfigError


@pytest.mark.parametrize(
    ("name", "value"),
    [("SONA_PROT", "1"), ("SONA_SERVICE", "x"), ("SONA_PORT_8765", "1"), ("SONA_PORTS", "1")],
)
def test_other_unknown_variables_are_still_refused(name: str, value: str) -> None:
    assert not is_service_link(name, value)
    with pytest.raises(ConfigError, match=name):
        check_environment({**SERVICE_LINKS, name: value})


def test_service_link_port_is_not_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONA_PORT", "tcp://10.96.0.17:9999")
    check_environment()
    assert Settings().port == 8765  # the default, not the Service's 9999


def test_a_numeric_sona_port_is_still_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONA_PORT", "9001")
    assert not is_service_link("SONA_PORT", "9001")
    assert Settings().port == 9001


def test_sona_serve_starts_with_service_links_set(tmp_path: Path) -> None:
    proc = spawn_daemon(
        tmp_path / "d", env=SERVICE_LINKS, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert '"status":"ready"' in line, line
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


# docs/configuration.md --------------------------------------------------------


def _cells(line: str) -> list[str]:
    """A markdown table row's cells; a `|` inside backticks or escaped (`\\|`)
    is text, not a border."""
    cells, current, quoted = [], "", False
    for ch in line.strip().strip("|"):
        if ch == "`":
            quoted = not quoted
        if ch == "|" and not quoted and not current.endswith("\\"):
            cells.append(current.strip())
            current = ""
        else:
            current += ch
    return [*cells, current.strip()]


def documented_settings(text: str) -> dict[str, dict[str, str]]:
    """Rows of every table whose header starts with `setting`, by setting name,
    each a {column name: cell} dict."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [c.lower() for c in cells] if cells[0].lower() == "setting" else []
        elif header and not set(line) <= set("|-: "):
            name = cells[0].strip("` ")
            assert name not in rows, f"docs/configuration.md has two rows for {name!r}"
            rows[name] = dict(zip(header, cells, strict=False))
    return rows


def _documented_default(cell: str) -> str:
    """The literal a default cell starts with: its first `code` span, else its
    first word."""
    found = re.search(r"`([^`]*)`", cell)
    return found.group(1) if found else cell.split(" ")[0]


def _agrees(field: FieldInfo, default: Any, literal: str) -> bool:
    if isinstance(default, bool):
        return literal.lower() == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(literal) == float(default)
        except ValueError:
            return False
    if isinstance(default, Path):
        return Path(literal) == default
    return literal == str(default)


ROWS = documented_settings(CONFIG_DOC.read_text())


def test_the_table_is_found() -> None:
    assert len(ROWS) > 10, "no `| setting | … |` table found in docs/configuration.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    env = f"SONA_{name.upper()}"
    if name not in ROWS:
        pytest.fail(
            f"docs/configuration.md has no row for the setting {name!r}: add "
            f"`| {name} | – | `{env}` | default | meaning |` to its table"
        )
    row = ROWS[name]
    assert env in row.get("env", ""), f"{name}'s row should name {env} in its env column"


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_documented_setting_exists(name: str) -> None:
    assert name in Settings.model_fields, (
        f"docs/configuration.md documents {name!r}, which is not a field of Settings"
    )


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_documented_default_agrees(name: str) -> None:
    if name not in ROWS:
        pytest.skip("no row (test_every_setting_is_documented says so)")
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True)
    cell = ROWS[name].get("default", "")
    assert cell, f"{name}'s row in docs/configuration.md has no default"
    if default in (None, "", []):
        return  # unset or derived: the cell says from what, in words
    literal = _documented_default(cell)
    assert _agrees(field, default, literal), (
        f"docs/configuration.md gives {name}'s default as {literal!r}; Settings says {default!r}"
    )


def test_the_walk_catches_drift() -> None:
    """The parser itself: a missing row and a wrong default are both seen."""
    table = "| setting | flag | env | default | meaning |\n| --- | --- | --- | --- | --- |\n"
    row = "| `port` | `--port` | `SONA_PORT` | `80` | a\\|b in `x|y` |\n"
    rows = documented_settings(table + row)
    assert set(rows) == {"port"} and rows["port"]["meaning"] == "a\\|b in `x|y`"
    field = Settings.model_fields["port"]
    assert not _agrees(field, field.default, _documented_default(rows["port"]["default"]))
