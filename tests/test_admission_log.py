"""The admission log line: one JSON object per admission, written and flushed at once."""

from __future__ import annotations

import io
import json

from app.service.logs import AdmissionLog, utc_timestamp


class CountingStream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_each_line_is_written_whole_and_flushed_at_once():
    log, stream = AdmissionLog(), CountingStream()
    log.direct(stream, True)
    for i in range(3):
        log.write({"uid": str(i), "decision": "injected"})
        assert stream.flushes == i + 1
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["uid"] for line in lines] == ["0", "1", "2"]
    assert all(line["msg"] == "admission" and line["level"] == "info" for line in lines)


def test_nothing_is_written_when_disabled():
    log, stream = AdmissionLog(), CountingStream()
    log.direct(stream, False)
    log.write({"uid": "a"})
    assert stream.getvalue() == b""


def test_a_closed_stream_does_not_break_admission():
    log, stream = AdmissionLog(), CountingStream()
    log.direct(stream, True)
    stream.close()
    log.write({"uid": "a"})  # raises nothing


def test_timestamps_are_rfc3339_utc_with_milliseconds():
    assert utc_timestamp(0.25) == "1970-01-01T00:00:00.250Z"
    assert utc_timestamp(86400.125) == "1970-01-02T00:00:00.125Z"
    assert utc_timestamp(0.5) == "1970-01-01T00:00:00.500Z"  # back to an earlier second
