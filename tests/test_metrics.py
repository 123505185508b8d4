"""GET /metrics after real jobs on the bundled tiny.en model; request ids on
streams; one access line per request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sona.app import create_app
from sona.keys import METRICS
from tests.helpers import audio_form, submit, wait_done


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _scrape(client: Any) -> dict[Any, float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return _samples(await resp.text())


async def test_metrics_move_after_a_real_job(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    before = await _scrape(client)
    assert _value(before, "sona_model_loaded", model="tiny.en") == 1
    assert _value(before, "sona_model_load_seconds", model="tiny.en") > 0
    assert _value(before, "sona_jobs_finished_total", outcome="completed") == 0
    assert _value(before, "process_resident_memory_bytes") > 0
    assert _value(before, "sona_engine_resident_memory_bytes") > 0

    job = await submit(client, fox_wav)
    done = await wait_done(client, job["id"])
    assert done["status"] == "completed"
    await client.get(f"/v1/jobs/{job['id']}")

    after = await _scrape(client)
    assert _value(after, "sona_jobs_finished_total", outcome="completed") == 1
    assert _value(after, "sona_job_duration_seconds_count") == 1
    assert _value(after, "sona_audio_seconds_total") > 1  # fox.wav is a few seconds long
    assert _value(after, "sona_job_realtime_factor_count") == 1
    assert _value(after, "sona_engine_steps_total") >= 1
    assert _value(after, "sona_engine_busy_seconds_total") > 0
    assert 0 < _value(after, "sona_worker_busy_ratio") <= 1
    assert _value(after, "sona_engine_restarts_total") == 0
    assert _value(after, "sona_queue_depth") == 0
    # Requests are labelled by route, never by the raw URL with the job id in it.
    route = "/v1/jobs/{job_id}"
    assert _value(after, "sona_http_requests_total", method="GET", route=route, status="200") >= 2
    assert _value(after, "sona_http_request_duration_seconds_count", method="GET", route=route) >= 2
    assert not any(job["id"] in str(labels) for _, labels in after)
    assert (
        _value(after, "sona_http_requests_total", method="POST", route="/v1/jobs", status="202")
        == 1
    )


async def test_queue_depth_and_unmatched_routes(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    from tests.helpers import idle_app

    client = await idle_app(aiohttp_client, make_settings)
    await submit(client, fox_wav)
    await client.get("/no/such/thing")
    samples = await _scrape(client)
    assert _value(samples, "sona_queue_depth") == 1
    assert _value(samples, "sona_models_loaded") == 0
    assert (
        _value(samples, "sona_http_requests_total", method="GET", route="unmatched", status="404")
        == 1
    )


async def test_webhook_helper_counts_by_outcome(aiohttp_client: Any, make_settings: Any) -> None:
    from tests.helpers import idle_app

    client = await idle_app(aiohttp_client, make_settings)
    client.app[METRICS].webhook_delivery("delivered")
    client.app[METRICS].webhook_delivery("failed")
    client.app[METRICS].webhook_delivery("failed")
    samples = await _scrape(client)
    assert _value(samples, "sona_webhook_deliveries_total", outcome="delivered") == 1
    assert _value(samples, "sona_webhook_deliveries_total", outcome="failed") == 2


async def test_two_apps_in_one_process_keep_their_own_numbers(
    aiohttp_client: Any, make_settings: Any, tmp_path: Path
) -> None:
    from tests.helpers import idle_app

    one = await idle_app(aiohttp_client, make_settings)
    two = await idle_app(aiohttp_client, make_settings, data_dir=tmp_path / "two")
    for _ in range(3):
        await one.get("/health")
    await two.get("/health")
    count = "sona_http_requests_total"
    labels = {"method": "GET", "route": "/health", "status": "200"}
    assert _value(await _scrape(one), count, **labels) == 3
    assert _value(await _scrape(two), count, **labels) == 1


async def test_request_id_on_streams(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    job = await submit(client, fox_wav)
    sse = await client.get(f"/v1/jobs/{job['id']}/events", headers={"X-Request-ID": "sse-1"})
    assert sse.headers["X-Request-ID"] == "sse-1"
    await sse.read()  # the stream ends with the job
    form = audio_form(fox_wav, model="tiny.en", stream="true")
    nd = await client.post(
        "/v1/audio/transcriptions",
        data=form,
        headers={"Accept": "application/x-ndjson", "X-Request-ID": "nd-1"},
    )
    assert nd.status == 200 and nd.headers["X-Request-ID"] == "nd-1"
    lines = [json.loads(x) for x in (await nd.text()).splitlines() if x.strip()]
    assert lines, "the NDJSON stream sent nothing"


async def test_one_access_line_per_request(
    aiohttp_client: Any, make_settings: Any, capsys: Any
) -> None:
    from sona.logs import configure

    configure("info", fmt="json")
    client = await aiohttp_client(create_app(make_settings(model=None)))
    capsys.readouterr()
    await client.get("/health", headers={"X-Request-ID": "line-1"})
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("event") == "http.request"]
    assert len(access) == 1
    line = access[0]
    assert line["method"] == "GET" and line["route"] == "/health" and line["status"] == 200
    assert line["request_id"] == "line-1" and line["duration_ms"] >= 0


async def test_gpu_metrics_only_with_nvml(aiohttp_client: Any, make_settings: Any) -> None:
    """Without the `gpu` extra or a GPU the family is absent, not zero."""
    import importlib.util

    from tests.helpers import idle_app

    client = await idle_app(aiohttp_client, make_settings)
    text = await (await client.get("/metrics")).text()
    if importlib.util.find_spec("pynvml") is None:
        assert "sona_gpu_memory" not in text
    else:  # pragma: no cover - a machine with nvidia-ml-py
        import pynvml

        try:
            pynvml.nvmlInit()
            gpus = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError:
            gpus = 0
        assert ("sona_gpu_memory_used_bytes" in text) == (gpus > 0)
