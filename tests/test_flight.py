"""A job in flight: its decoded chunks are stored in chunk order whatever
order the steps end in, segments numbered on from those stored, and the
processed seconds are each channel's furthest end, averaged."""

from __future__ import annotations

from pathlib import Path

from sona.engine import ChunkInfo
from sona.engine.registry import ModelEntry
from sona.flight import SEQUENTIAL_BEAM, Flight, job_spec
from sona.jobs import LIVE_KEY, Job, Segment, Status, TranscribeOptions
from sona.store import Claim

ENTRY = ModelEntry("tiny.en", Path("/models/tiny.en"), 0.0, 0.0)


def claim(
    *, chunks_done: int = 0, segments_done: int = 0, crashes: int = 0, **opts: object
) -> Claim:
    job = Job(
        id="j", status=Status.PROCESSING, options=TranscribeOptions(**opts),  # type: ignore[arg-type]
        model="tiny.en", priority=7, file_path="/nowhere.wav", file_name="a.wav",
        file_sha256="0", file_size=1, created_at=3.0, chunks_done=chunks_done,
        segments_done=segments_done, crashes=crashes,
    )  # fmt: skip
    return Claim(job, token="t1")


def flight(channels: int = 1, **kw: object) -> Flight:
    c = claim(**kw)  # type: ignore[arg-type]
    spec = job_spec(c, ENTRY, beam_size=1, max_seconds=600, channels=channels)
    return Flight(c, spec, ENTRY, deadline=0.0)


def chunk(no: int, start: float, end: float, channel: int = 0) -> ChunkInfo:
    return ChunkInfo("j", no, channel, start, end, end - start)


def seg(start: float, end: float, text: str = "x") -> Segment:
    return Segment(index=-1, start=start, end=end, text=text)


def test_chunks_decoded_out_of_order_wait_for_those_before_them() -> None:
    f = flight()
    f.cut([chunk(0, 0, 20), chunk(1, 20, 40), chunk(2, 40, 60)], "en")
    f.decoded[1] = [seg(21, 30, "b")]
    f.decoded[2] = [seg(41, 50, "c")]
    assert not f.ready()  # chunk 0 is still being decoded
    f.decoded[0] = [seg(0, 10, "a"), seg(10, 19, "a2")]
    assert f.ready()
    write = f.take_write()
    assert (write.first, write.count) == (0, 3)  # all three in one write
    assert [(s.index, s.text) for s in write.segments] == [(0, "a"), (1, "a2"), (2, "b"), (3, "c")]
    assert write.processed_seconds == 60
    assert f.decoded == {} and f.chunks == {}


def test_a_write_numbers_segments_on_from_those_stored_and_the_job_moves_past_it() -> None:
    f = flight(chunks_done=2, segments_done=5)  # a re-run: two chunks stored before
    f.job.processed_seconds = 40.0
    f.cut([chunk(2, 40, 60), chunk(3, 60, 80)], "en")
    f.decoded[2] = [seg(41, 59)]
    write = f.take_write()
    assert (write.first, write.count, [s.index for s in write.segments]) == (2, 1, [5])
    assert write.processed_seconds == 60  # the chunk's end, past the last segment
    added = f.stored(write)
    assert added == 20
    job = f.job
    assert (job.chunks_done, job.segments_done, job.processed_seconds) == (3, 6, 60)
    assert not f.ready() and not f.done
    f.total = 4
    f.decoded[3] = []  # speechless: stored all the same
    f.stored(f.take_write())
    assert f.done and f.job.segments_done == 6


def test_two_channels_count_half_each() -> None:
    """Each channel is cut on its own: processed is the mean of their ends."""
    f = flight(channels=2)
    f.cut([chunk(0, 0, 20, channel=0), chunk(1, 0, 10, channel=1)], "en")
    f.decoded[0] = [seg(0, 19)]
    f.decoded[1] = [seg(0, 9)]
    assert f.take_write().processed_seconds == 15


def test_a_sequential_segment_counts_to_its_own_end() -> None:
    # A sequential job's "chunk" is one segment, timed only once decoded.
    f = flight(condition_on_previous_text=True)
    f.cut([chunk(0, 0, 0)], "en")
    f.decoded[0] = [seg(0, 27.5)]
    assert f.take_write().processed_seconds == 27.5


def test_cut_chunks_carry_the_jobs_priority_age_and_suspicion_to_the_pool() -> None:
    plain, suspect = flight(), flight(crashes=1)
    [p] = plain.cut([chunk(0, 0, 20)], "en")
    [s] = suspect.cut([chunk(0, 0, 20)], "en")
    assert (p.priority, p.age, p.suspect) == (7, 3.0, False)
    assert s.suspect and p.key == s.key
    assert plain.chunks == {0: chunk(0, 0, 20)}


def test_the_spec_resumes_after_what_was_stored_with_the_jobs_own_beam() -> None:
    spec = job_spec(
        claim(chunks_done=3, beam_size=2), ENTRY, beam_size=1, max_seconds=60, channels=2
    )
    assert (spec.skip_chunks, spec.options.beam_size, spec.channels) == (3, 2, 2)
    assert (spec.token, spec.model_id, spec.vad, spec.max_seconds) == ("t1", "tiny.en", True, 60)
    default = job_spec(claim(), ENTRY, beam_size=4, max_seconds=60, channels=1)
    assert default.options.beam_size == 4
    sequential = job_spec(
        claim(condition_on_previous_text=True), ENTRY, beam_size=4, max_seconds=60, channels=1
    )
    assert sequential.options.beam_size == SEQUENTIAL_BEAM
    assert not job_spec(claim(vad_filter=False), ENTRY, beam_size=1, max_seconds=60, channels=1).vad


def test_a_live_job_goes_on_from_its_last_turn_a_file_job_by_chunk_count() -> None:
    """A live session's stored turns are not cuts of its file: its re-run cuts
    the audio after them. A file job's re-run cuts the whole file again."""
    file, live = claim(chunks_done=3), claim(chunks_done=2, segments_done=5)
    file.job.processed_seconds = live.job.processed_seconds = 9.5
    live.job.metadata = {LIVE_KEY: "sess_1"}
    for c, from_s in ((file, None), (live, 9.5)):
        spec = job_spec(c, ENTRY, beam_size=1, max_seconds=60, channels=1)
        assert (spec.skip_chunks, spec.from_s) == (c.job.chunks_done, from_s)
