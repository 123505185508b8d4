"""deploy/ and scripts/start_*: real linters where they are installed (each
test says why it skips otherwise; .ci/run installs them), and structural
checks of what no linter here can run (no Docker engine, no cluster)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
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


def _unit() -> tuple[str, dict[str, dict[str, list[str]]], list[list[str]]]:
    """The unit's text, its settings by section (a key may repeat), and the shell
    commands of its install comment."""
    text = (DEPLOY / "systemd" / "sona.service").read_text()
    sections: dict[str, dict[str, list[str]]] = {}
    commands: list[list[str]] = []
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            body = line.lstrip("#").strip()
            if body.startswith(("install ", "python3 ", "systemctl ")):
                commands += [shlex.split(c) for c in body.split("&&")]
        elif line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return text, sections, commands


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    unit, sections, _ = _unit()
    service = sections["Service"]
    # verify insists that ExecStart exists; the venv is not installed here.
    (exec_start,) = service["ExecStart"]
    assert shlex.split(exec_start)[:2] == ["/opt/sona/bin/sona", "serve"]
    copy = tmp_path / "sona.service"
    copy.write_text(unit.replace("/opt/sona/bin/sona", shutil.which("true") or "/bin/true"))
    r = _run(analyze, "verify", str(copy))
    assert r.returncode == 0, r.stdout + r.stderr
    for key in ("NoNewPrivileges", "ProtectSystem", "DynamicUser"):
        assert service[key] == ["strict" if key == "ProtectSystem" else "yes"], key


def test_systemd_unit_reads_the_config_file_it_installs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit names a config file, its install lines put the shipped one there,
    and that file is valid Sona settings (unknown keys would be refused)."""
    _, sections, commands = _unit()
    env = dict(v.split("=", 1) for v in sections["Service"]["Environment"])
    path = env["SONA_CONFIG_FILE"]
    installs = [c[-2:] for c in commands if c[0] == "install"]
    assert ["deploy/systemd/sona.toml", path] in installs, installs
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
    dashboard = json.loads((DEPLOY / "grafana" / "sona-dashboard.json").read_text())
    exprs += list(_values_of("expr", dashboard))
    used = {m for e in exprs for m in re.findall(r"\b((?:sona|process)_[a-z_]+)", e)}
    optional = {"sona_gpu_memory_used_bytes", "sona_gpu_memory_total_bytes"}  # GPU only
    assert used, "no metric names found"
    assert used - exported - optional == set()


def _values_of(key: str, node: Any) -> Iterator[Any]:
    """Every value under ``key`` anywhere in a parsed JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _values_of(key, v)
    elif isinstance(node, list):
        for item in node:
            yield from _values_of(key, item)


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
    final = _stages(path)[-1]
    last = {instruction: args for instruction, args in final}  # the one that counts
    assert last["USER"] == "10001:10001"  # numeric: runAsNonRoot can check it
    options, _, probe = last["HEALTHCHECK"].partition("CMD ")
    assert "/health" in " ".join(json.loads(probe)), probe
    assert json.loads(last["VOLUME"]) == ["/data"]
    env = dict(p.split("=", 1) for i, a in final if i == "ENV" for p in shlex.split(a))
    assert env["SONA_DATA_DIR"] == "/data"
    assert json.loads(last["CMD"]) == ["sona", "serve"]


def _docker_run_args(path: Path) -> list[str]:
    """The arguments the start script gives ``docker run``."""
    text = path.read_text()
    if path.suffix == ".sh":
        joined = text.replace("\\\n", " ")
        (line,) = [x.strip() for x in joined.splitlines() if x.strip().startswith("docker run ")]
        return shlex.split(line)[2:]
    block = re.search(r"^\$runArgs = @\((.*?)^docker @runArgs", text, re.M | re.S)
    assert block, f"no docker run arguments in {path}"
    # PowerShell's array: quoted strings and bare variables, in order.
    return [a or b for a, b in re.findall(r'"([^"]*)"|(\$\w+)', block.group(1))]


@pytest.mark.parametrize("path", [START_SH, START_PS1], ids=lambda p: p.name)
def test_start_scripts_run_the_persistent_service(path: Path) -> None:
    args = _docker_run_args(path)
    after = {a: b for a, b in zip(args, args[1:], strict=False)}
    assert after["--restart"] == "unless-stopped"
    assert after["-p"].startswith("127.0.0.1:") and after["-p"].endswith(":8765")
    assert "--read-only" in args


# --- Dockerfiles and the build context, parsed --------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) as Docker reads them: continuation lines
    joined, comment lines (also inside a continuation) dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, args = (pending + line).partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    assert not pending, f"{path} ends inside a continuation"
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in _instructions(path):
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args))
    return stages


def _labels(stage: list[tuple[str, str]]) -> dict[str, str]:
    pairs = [p for i, a in stage if i == "LABEL" for p in shlex.split(a)]
    return dict(p.split("=", 1) for p in pairs)


def _arg_defaults(stage: list[tuple[str, str]]) -> dict[str, str]:
    args = [a.split("=", 1) for i, a in stage if i == "ARG" and "=" in a]
    return {k: shlex.split(v)[0] if v.strip() else "" for k, v in args}


PINNED = re.compile(r"^(?P<name>[a-z0-9./_-]+:[A-Za-z0-9._-]+)@(?P<digest>sha256:[0-9a-f]{64})$")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_bases_pinned_and_oci_labels(path: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    stages = _stages(path)
    names: set[str] = set()
    for stage in stages:
        image, *alias = stage[0][1].split()
        if image not in names:  # an earlier stage is not a base image
            assert PINNED.match(image), f"{image}: pin it as name:tag@sha256:<digest>"
        if alias:
            names.add(alias[-1])
    final = stages[-1]
    base = PINNED.match(final[0][1].split()[0])
    assert base
    labels = _labels(final)
    prefix = "org.opencontainers.image."
    assert {
        f"{prefix}{k}"
        for k in ("title", "description", "version", "revision", "licenses", "source")
        + ("base.name", "base.digest")
    } <= set(labels)
    assert labels[f"{prefix}licenses"] == project["license"]
    assert labels[f"{prefix}version"] == "${SONA_VERSION}"
    assert _arg_defaults(final)["SONA_VERSION"] == project["version"]
    assert labels[f"{prefix}base.digest"] == base["digest"]
    assert labels[f"{prefix}base.name"].endswith("/" + base["name"])


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """One .dockerignore pattern (Go filepath.Match plus `**`) as a regex that
    matches a path or any directory above it (ignoring a directory ignores
    what is in it)."""
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(f"^{out}(?:/.*)?$")


def _dockerignored(path: str) -> bool:
    ignored = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if _ignore_regex(line.lstrip("!")).match(path):
            ignored = not negate  # the last matching pattern decides
    return ignored


def _copied_sources() -> set[str]:
    sources = set()
    for path in DOCKERFILES:
        for instruction, args in _instructions(path):
            words = shlex.split(args)
            if instruction in ("COPY", "ADD") and not any(w.startswith("--from") for w in words):
                sources.update(w for w in words[:-1] if not w.startswith("--"))
    return sources


def test_dockerignore_keeps_the_build_context_to_what_is_copied() -> None:
    for junk in (
        ".venv/bin/python",
        ".git/HEAD",
        "data/sona.db",
        "data/models/tiny.en/model.bin",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        "service/sona/__pycache__/cli.cpython-311.pyc",
        "service/sona/api/__pycache__/jobs.cpython-311.pyc",
        "sona.egg-info/PKG-INFO",
        "dist/sona-0.1.0-py3-none-any.whl",
        "tests/audio/fox.wav",
    ):
        assert _dockerignored(junk), junk
    sources = _copied_sources()
    assert {"pyproject.toml", "README.md", "LICENSE", "service", "mcp_tools"} <= sources
    tracked = subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.split()
    kept = {f for f in tracked if not _dockerignored(f)}
    for source in sources:  # every COPY finds its files ...
        assert any(f == source or f.startswith(source + "/") for f in kept), source
    for f in kept:  # ... and nothing else is sent to the builder
        assert any(f == s or f.startswith(s + "/") for s in sources), f


# --- Kubernetes: the GPU overlay ----------------------------------------------


def _strategic_merge(base: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge for what the overlay uses: maps merge by
    key; lists of named maps (containers, env) merge by name; other lists
    are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _strategic_merge(base[key], value) if key in base else value
        return merged
    named = all(isinstance(x, dict) and "name" in x for x in [*base, *patch])
    if isinstance(base, list) and isinstance(patch, list) and named:
        by_name = {x["name"]: x for x in base}
        for item in patch:
            old = by_name.get(item["name"])
            by_name[item["name"]] = _strategic_merge(old, item) if old else item
        return list(by_name.values())
    return patch


def test_kubernetes_gpu_overlay() -> None:
    kube = DEPLOY / "kubernetes"
    base_k = yaml.safe_load((kube / "kustomization.yaml").read_text())
    assert base_k["resources"] == ["sona.yaml"]
    overlay = yaml.safe_load((kube / "gpu" / "kustomization.yaml").read_text())
    assert overlay["resources"] == [".."]
    (patch_ref,) = overlay["patches"]
    patch = yaml.safe_load((kube / "gpu" / patch_ref["path"]).read_text())
    base = _k8s()["Deployment"]
    assert (patch["kind"], patch["metadata"]["name"]) == ("Deployment", base["metadata"]["name"])
    gpu = _strategic_merge(base, patch)
    pod = gpu["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SONA_DEVICE"]["value"] == "cuda"
    assert "secretKeyRef" in env["SONA_API_KEYS"]["valueFrom"]  # the base's env is kept
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert container["image"] == "sona:cuda"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert compose["services"]["sona-gpu"]["image"] == container["image"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


# --- Prometheus scrape config --------------------------------------------------


def test_prometheus_scrape_config_sends_the_key_from_a_file(tmp_path: Path) -> None:
    path = DEPLOY / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(path.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "sona"]
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and "credentials" not in auth
    assert auth["credentials_file"].startswith("/")
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8765"]
    for rules in config["rule_files"]:
        assert (path.parent / rules).is_file(), rules
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed here (.ci/run installs it)")
    # A full check (the files must exist): a copy naming a key file that does.
    key = tmp_path / "sona-api-key"
    key.write_text("a-key\n")
    auth["credentials_file"] = str(key)
    config["rule_files"] = [str(path.parent / r) for r in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    r = _run(promtool, "check", "config", str(copy))
    assert r.returncode == 0, r.stdout + r.stderr


# --- The start scripts: only their own container is replaced -------------------

FAKE_DOCKER = """#!/usr/bin/env bash
# docker, as far as the start script uses it: every call logged.
echo "$*" >> "$FAKE_LOG"
if [[ "$1 $2" == "container inspect" ]]; then
    [[ -n "${FAKE_CONTAINER:-}" ]] || { echo "Error: No such container: $3" >&2; exit 1; }
    if [[ "$3" == "--format" ]]; then
        if [[ "$4" == *json* ]]; then echo "${FAKE_LABELS_JSON:-null}"; else
            echo "${FAKE_LABEL:-<no value>}"; fi
    fi
fi
exit 0
"""


def _fake_docker(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("docker", FAKE_DOCKER), ("curl", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_LOG": str(tmp_path / "docker.log")}


OWNER = "sona.managed-by=start_transcription_service"


def _start(cmd: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, str, list[str]]:
    log = tmp_path / "docker.log"
    log.unlink(missing_ok=True)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    return r.returncode, r.stderr, log.read_text().splitlines() if log.exists() else []


def _check_start_script(cmd: list[str], tmp_path: Path) -> None:
    env = _fake_docker(tmp_path)
    rc, err, calls = _start(cmd, env, tmp_path)  # no container yet
    (run,) = [c for c in calls if c.startswith("run ")]
    assert rc == 0 and f"--label {OWNER}" in run and not any(c.startswith("rm") for c in calls)
    foreign = {**env, "FAKE_CONTAINER": "1", "FAKE_LABELS_JSON": '{"other": "x"}'}
    rc, err, calls = _start(cmd, foreign, tmp_path)
    assert rc == 1 and "not started by this script" in err, err
    assert not any(c.startswith(("rm", "run")) for c in calls), calls
    ours = {
        **env,
        "FAKE_CONTAINER": "1",
        "FAKE_LABEL": "start_transcription_service",
        "FAKE_LABELS_JSON": '{"sona.managed-by": "start_transcription_service"}',
    }
    rc, err, calls = _start(cmd, ours, tmp_path)
    verbs = [c.split()[0] for c in calls]
    assert rc == 0 and verbs.index("rm") < verbs.index("run"), (err, calls)
    assert "rm -f sona" in calls


def test_start_script_replaces_only_its_own_container(tmp_path: Path) -> None:
    _check_start_script(["bash", str(START_SH)], tmp_path)


def test_start_script_ps1_replaces_only_its_own_container(tmp_path: Path) -> None:
    pwsh = _tool("pwsh")
    _check_start_script([pwsh, "-NoProfile", "-File", str(START_PS1)], tmp_path)
