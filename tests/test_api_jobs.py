"""The job queue end to end, in process, on the real tiny.en model (A1–A7)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from sona.app import create_app
from tests.helpers import audio_form, poll, submit, wait_done


async def start(aiohttp_client: Any, make_settings: Any, **overrides: Any) -> TestClient:
    return await aiohttp_client(create_app(make_settings(**overrides)))


async def test_submit_to_completed_with_expected_words(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, manifest: dict[str, Any]
) -> None:
    client = await start(aiohttp_client, make_settings)
    job = await submit(client, fox_wav, metadata='{"ticket": 7}')
    assert job["status"] == "queued" and job["metadata"] == {"ticket": 7}
    done = await wait_done(client, job["id"])
    assert done["status"] == "completed", done
    text = done["text"].lower()
    for word in manifest["fox.wav"]["keywords"]:
        assert word in text
    assert done["progress"] == 1.0 and done["attempts"] == 1 and done["language"] == "en"
    assert done["duration"] == pytest_approx(manifest["fox.wav"]["duration_s"])
    assert done["started_at"] and done["finished_at"] and done["error"] is None


def pytest_approx(value: float) -> Any:
    import pytest

    return pytest.approx(value, abs=0.3)


async def test_every_download_format_parses(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    job = await submit(client, fox_wav, word_timestamps="true")
    done = await wait_done(client, job["id"])
    url = f"/v1/jobs/{job['id']}/transcript"
    text = await (await client.get(url)).text()
    assert text.strip() == done["text"]
    assert (await (await client.get(url + "?format=json")).json())["text"] == done["text"]
    verbose = await (await client.get(url + "?format=verbose_json")).json()
    assert verbose["segments"] and verbose["words"], "words asked for must not be empty"
    assert all(w["start"] <= w["end"] for w in verbose["words"])
    srt = await (await client.get(url + "?format=srt")).text()
    assert re.search(r"^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n", srt, re.M)
    vtt = await client.get(url + "?format=vtt")
    assert vtt.content_type == "text/vtt" and (await vtt.text()).startswith("WEBVTT")
    tsv = (await (await client.get(url + "?format=tsv")).text()).splitlines()
    assert tsv[0].split("\t") == ["start", "end", "text"] and len(tsv) == 1 + len(
        verbose["segments"]
    )
    jsonl = (await (await client.get(url + "?format=jsonl")).text()).splitlines()
    assert [json.loads(line)["text"] for line in jsonl] == [s["text"] for s in verbose["segments"]]
    bad = await client.get(url + "?format=docx")
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "format"


async def test_progress_and_partial_text_advance_during_a_long_job(
    aiohttp_client: Any, make_settings: Any, longer_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    job = await submit(client, longer_wav)
    seen: list[dict[str, Any]] = []

    def record(j: dict[str, Any]) -> bool:
        if j["status"] == "processing" and j["segments_done"]:
            seen.append(j)
        return j["status"] == "completed"

    done = await poll(client, job["id"], record)
    partial = [j for j in seen if 0 < j["progress"] < 1]
    assert partial, "no partial progress was observed while processing"
    assert all(j["text"] and done["text"].startswith(j["text"]) for j in partial)
    progress = [j["progress"] for j in seen]
    assert progress == sorted(progress)
    assert done["segments_done"] > partial[0]["segments_done"]


async def test_r20_cancel_processing_job_stops_within_one_window(
    aiohttp_client: Any, make_settings: Any, longer_wav: Path, fox_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    job = await submit(client, longer_wav)
    await poll(client, job["id"], lambda j: j["segments_done"] > 0)
    resp = await client.delete(f"/v1/jobs/{job['id']}")
    body = await resp.json()
    # The answer itself says the job stopped (DELETE waits for the worker to end it).
    assert resp.status == 200 and body["status"] == "cancelled", body
    assert body["progress"] < 1.0
    again = await client.delete(f"/v1/jobs/{job['id']}")
    assert again.status == 200 and (await again.json())["status"] == "cancelled"
    # The worker is free for the next job.
    nxt = await wait_done(client, (await submit(client, fox_wav))["id"])
    assert nxt["status"] == "completed"


async def test_r20_cancel_queued_job_never_runs(
    aiohttp_client: Any, make_settings: Any, long_wav: Path, fox_wav: Path
) -> None:
    # One job in flight at a time, so the second one really waits in the queue.
    client = await start(aiohttp_client, make_settings, max_jobs_in_flight=1)
    first = await submit(client, long_wav)
    await poll(client, first["id"], lambda j: j["status"] == "processing")
    queued = await submit(client, fox_wav)
    resp = await client.delete(f"/v1/jobs/{queued['id']}")
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    await client.delete(f"/v1/jobs/{first['id']}")
    await wait_done(client, first["id"])
    # A later job runs to the end: the worker claims in order, so by then it has
    # passed the cancelled one.
    later = await wait_done(client, (await submit(client, fox_wav))["id"])
    assert later["status"] == "completed"
    final = await (await client.get(f"/v1/jobs/{queued['id']}")).json()
    assert final["status"] == "cancelled" and final["attempts"] == 0 and final["started_at"] is None


async def test_r20_finished_job_cannot_be_cancelled(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    job = await submit(client, fox_wav)
    await wait_done(client, job["id"])
    resp = await client.delete(f"/v1/jobs/{job['id']}")
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "invalid_transition"


async def test_client_job_id_and_idempotency_key(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, manifest: dict[str, Any]
) -> None:
    client = await start(aiohttp_client, make_settings)
    first = await submit(client, fox_wav, job_id="meeting-42")
    assert first["id"] == "meeting-42"
    same = await client.post("/v1/jobs", data=audio_form(fox_wav, job_id="meeting-42"))
    assert same.status == 200 and (await same.json())["id"] == "meeting-42"
    other = next(Path(fox_wav.parent, n) for n in manifest if n not in ("fox.wav", "stereo.wav"))
    clash = await client.post("/v1/jobs", data=audio_form(other, job_id="meeting-42"))
    assert clash.status == 409 and (await clash.json())["error"]["code"] == "idempotency_conflict"
    h = {"Idempotency-Key": "retry-1"}
    a = await (await client.post("/v1/jobs", data=audio_form(fox_wav), headers=h)).json()
    b = await client.post("/v1/jobs", data=audio_form(fox_wav), headers=h)
    assert b.status == 200 and (await b.json())["id"] == a["id"]
    listed = await (await client.get("/v1/jobs?limit=100")).json()
    assert len(listed["data"]) == 2  # no duplicate rows
    uploads = list((make_settings().data_dir / "uploads").iterdir())
    assert len(uploads) == 2  # the duplicates' files were not kept


async def test_unknown_and_unfinished(
    aiohttp_client: Any, make_settings: Any, long_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    assert (await client.get("/v1/jobs/nope")).status == 404
    bad = await client.get("/v1/jobs/..%2F..%2Fetc")
    assert bad.status in (400, 404)
    job = await submit(client, long_wav)
    early = await client.get(f"/v1/jobs/{job['id']}/transcript")
    assert early.status == 409
    assert (await early.json())["error"]["code"] == "job_not_finished"
    assert early.headers["X-Job-Status"] in ("queued", "processing")
    await client.delete(f"/v1/jobs/{job['id']}")


async def test_list_filters_and_paginates(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    ids = [(await submit(client, fox_wav, job_id=f"j{i}"))["id"] for i in range(3)]
    page = await (await client.get("/v1/jobs?limit=2")).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["has_more"]
    rest = await (await client.get(f"/v1/jobs?limit=2&before={page['next_before']}")).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and not rest["has_more"]
    none = await (await client.get("/v1/jobs?status=cancelled")).json()
    assert none["data"] == []
    assert (await client.get("/v1/jobs?status=bogus")).status == 400


async def test_seed_compatible_routes(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, long_wav: Path
) -> None:
    client = await start(aiohttp_client, make_settings)
    resp = await client.post("/transcribe", data=audio_form(fox_wav))
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "queued" and set(body) == {"job_id", "status"}
    busy = await (await client.post("/transcribe", data=audio_form(long_wav))).json()
    early = await client.get(f"/download/{busy['job_id']}")
    assert early.status == 404  # the seed contract: 404 until ready
    await wait_done(client, body["job_id"])
    status = await (await client.get(f"/status/{body['job_id']}")).json()
    assert set(status) == {"job_id", "status", "progress", "transcript", "error"}
    assert status["status"] == "completed" and status["progress"] == 1.0
    assert "fox" in status["transcript"].lower() and status["error"] is None
    text = await client.get(f"/download/{body['job_id']}")
    assert text.status == 200 and text.content_type == "text/plain"
    assert (await text.text()).strip() == status["transcript"]
    assert (await client.get("/status/unknown")).status == 404
    await client.delete(f"/v1/jobs/{busy['job_id']}")


async def test_broken_model_fails_the_job_not_the_worker(
    aiohttp_client: Any, make_settings: Any, fox_wav: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"not a model")
    (broken / "config.json").write_text("{}")
    client = await start(aiohttp_client, make_settings)
    bad = await submit(client, fox_wav, model=str(broken))
    failed = await wait_done(client, bad["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "model_load_failed"
    assert failed["attempts"] == 1
    good = await wait_done(client, (await submit(client, fox_wav))["id"])
    assert good["status"] == "completed"
    long_key = await client.post(
        "/v1/jobs", data=audio_form(fox_wav), headers={"Idempotency-Key": "k" * 300}
    )
    assert long_key.status == 400
