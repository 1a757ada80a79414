"""The admission log line: one JSON object per admission, written at once, flushed once per loop pass."""

from __future__ import annotations

import asyncio
import io
import json

from app.service.logs import AdmissionLog


class CountingStream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_lines_written_in_one_loop_pass_share_one_flush_and_all_arrive():
    log, stream = AdmissionLog(), CountingStream()
    log.direct(stream, True)

    async def burst() -> None:
        for i in range(100):
            log.write({"uid": str(i), "decision": "injected"})
        assert stream.flushes == 0  # nothing has waited yet
        await asyncio.sleep(0)

    asyncio.run(burst())
    assert stream.flushes == 1
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["uid"] for line in lines] == [str(i) for i in range(100)]
    assert all(line["msg"] == "admission" and line["level"] == "info" for line in lines)


def test_outside_an_event_loop_each_line_is_flushed_at_once():
    log, stream = AdmissionLog(), CountingStream()
    log.direct(stream, True)
    log.write({"uid": "a"})
    log.write({"uid": "b"})
    assert stream.flushes == 2


def test_a_closed_stream_does_not_break_admission():
    log, stream = AdmissionLog(), CountingStream()
    log.direct(stream, True)

    async def write_then_close() -> None:
        log.write({"uid": "a"})
        stream.close()
        await asyncio.sleep(0)

    asyncio.run(write_then_close())
