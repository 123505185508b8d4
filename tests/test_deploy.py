"""deploy/ and scripts/start_*: real linters where they are installed (each
test says why it skips otherwise; .ci/run installs them), and structural
checks of what no linter here can run (no Docker engine, no cluster)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sona.app import create_app
from sona.settings import Settings
from tests.helpers import submit, wait_done

REPO = Path(__file__).parent.parent
DEPLOY = REPO / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]
START_SH = REPO / "scripts" / "start_transcription_service.sh"
START_PS1 = REPO / "scripts" / "start_transcription_service.ps1"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed here (.ci/run installs it)")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)


def test_dockerfiles_pass_hadolint() -> None:
    r = _run(_tool("hadolint"), "--config", str(DEPLOY / ".hadolint.yaml"), *map(str, DOCKERFILES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_start_script_passes_shellcheck() -> None:
    r = _run(_tool("shellcheck"), str(START_SH))
    assert r.returncode == 0, r.stdout + r.stderr


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    unit = (DEPLOY / "systemd" / "sona.service").read_text()
    # verify insists that ExecStart exists; the venv is not installed here.
    assert "ExecStart=/opt/sona/bin/sona serve" in unit
    copy = tmp_path / "sona.service"
    copy.write_text(unit.replace("/opt/sona/bin/sona", shutil.which("true") or "/bin/true"))
    r = _run(analyze, "verify", str(copy))
    assert r.returncode == 0, r.stdout + r.stderr
    for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "DynamicUser=yes"):
        assert hardening in unit


def test_systemd_unit_reads_the_config_file_it_installs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit names a config file, its install lines put the shipped one there,
    and that file is valid Sona settings (unknown keys would be refused)."""
    unit = (DEPLOY / "systemd" / "sona.service").read_text()
    (path,) = re.findall(r"^Environment=SONA_CONFIG_FILE=(\S+)$", unit, re.MULTILINE)
    assert f"deploy/systemd/sona.toml {path}" in unit  # the install line
    monkeypatch.setenv("SONA_CONFIG_FILE", str(DEPLOY / "systemd" / "sona.toml"))
    settings = Settings()
    assert settings.model == "tiny.en" and settings.log_format == "json"


def test_alert_rules_pass_promtool() -> None:
    promtool = _tool("promtool")
    rules = DEPLOY / "prometheus"
    r = _run(promtool, "check", "rules", str(rules / "sona-alerts.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    # Unit tests: the alerts fire on the series they are for, not on healthy ones.
    r = _run(promtool, "test", "rules", str(rules / "sona-alerts.test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_yaml_passes_yamllint() -> None:
    config = (
        "{extends: default, rules: {line-length: {max: 110}, document-start: disable,"
        " truthy: {check-keys: false}}}"
    )
    files = [
        DEPLOY / "docker-compose.yml",
        *sorted(DEPLOY.rglob("*.yaml")),
        *sorted(DEPLOY.rglob("*.yml")),
    ]
    r = _run(_tool("yamllint"), "-d", config, *sorted({str(f) for f in files}))
    assert r.returncode == 0, r.stdout + r.stderr


def _exported_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{x}" for x in ("bucket", "sum", "count"))
    return names


async def test_rules_and_dashboard_use_only_exported_metrics(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    await wait_done(client, (await submit(client, fox_wav))["id"])
    exported = _exported_names(await (await client.get("/metrics")).text())
    rules = yaml.safe_load((DEPLOY / "prometheus" / "sona-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = (DEPLOY / "grafana" / "sona-dashboard.json").read_text()
    exprs += re.findall(r'"expr": "((?:[^"\\]|\\.)*)"', dashboard)
    used = {m for e in exprs for m in re.findall(r"\b((?:sona|process)_[a-z_]+)", e)}
    optional = {"sona_gpu_memory_used_bytes", "sona_gpu_memory_total_bytes"}  # GPU only
    assert used, "no metric names found"
    assert used - exported - optional == set()


def _k8s() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / "kubernetes" / "sona.yaml").read_text())
    return {d["kind"]: d for d in docs}


def test_kubernetes_manifests() -> None:
    k = _k8s()
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= set(k)
    pod = k["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {"requests", "limits"} <= set(container["resources"])
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsUser"] != 0
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts  # the only writable places
    claim = {v["name"]: v for v in pod["volumes"]}["data"]["persistentVolumeClaim"]["claimName"]
    assert claim == k["PersistentVolumeClaim"]["metadata"]["name"]
    assert k["Service"]["spec"]["selector"] == k["Deployment"]["spec"]["selector"]["matchLabels"]


def test_kubernetes_pod_gets_no_service_links() -> None:
    pod = _k8s()["Deployment"]["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False


def test_compose_profiles() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {s["profiles"][0] for s in services.values()} == {"cpu", "gpu"}
    for service in services.values():
        assert service["restart"] == "unless-stopped" and service["read_only"] is True
        assert service["ports"] == ["127.0.0.1:8765:8765"]
        assert service["volumes"] == ["sona-data:/data"]
        assert service["build"]["dockerfile"] in ("deploy/Dockerfile", "deploy/Dockerfile.cuda")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_shape(path: Path) -> None:
    text = path.read_text()
    assert re.search(r"^USER 10001:10001$", text, re.M)  # numeric: runAsNonRoot can check it
    assert re.search(r"^HEALTHCHECK .*\n.*/health", text, re.M)
    assert 'VOLUME ["/data"]' in text and "SONA_DATA_DIR=/data" in text
    assert 'CMD ["sona", "serve"]' in text


def test_start_scripts_run_the_persistent_service() -> None:
    for path in (START_SH, START_PS1):
        text = path.read_text()
        assert "unless-stopped" in text and "8765" in text and "127.0.0.1:" in text
        assert "--read-only" in text
