"""The benchmark's load generators, run as separate processes, and what they report.

- `wrk` (C, epoll, OpenSSL, keep-alive) saturates: closed loop over N connections, one thread. It is
  also run against scripts/loadgen_ceiling.py to show its own ceiling.
- `hey` (Go) holds a fixed rate: -c workers, each limited to -q requests/s over its own keep-alive
  connection, so "-c 2 -q 250" is 500 requests/s over two connections. It reports latency
  percentiles with 0.1 ms resolution, enough for a p99 in milliseconds.
- For a p50 that must be compared within a few percent (the lookup-cost figure), `wrk -c1` sends
  one request at a time and reports percentiles in microseconds.

Each run also reports the CPU the generator used (from the kernel's accounting of the finished
child), so the table can show that the generator had headroom while the server was saturated.
Both tools skip certificate verification; the benchmark checks the servers' answers itself.

`busy_cores` tells how loaded the shared machine is before a run; `profiled` samples a server with
py-spy during a run (scripts/bench --profile) and names the app/ functions that take the time.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOADGEN_CPU = "0"  # servers go to the other core (see scripts/bench --no-pin)
TOOLS = {"wrk": "apt-get install wrk", "hey": "apt-get install hey", "taskset": "apt-get install util-linux"}

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


class LoadgenError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadResult:
    """One run of a generator against one URL."""

    tool: str
    requests: int
    seconds: float
    rate: float  # completed requests per second
    errors: int  # transport errors plus answers other than 2xx
    percentiles: dict[str, float] = field(default_factory=dict)  # "50" -> seconds
    loadgen_cpu: float = 0.0  # CPU seconds the generator used / wall seconds (1.0 = one core)
    output: str = ""

    @property
    def p50(self) -> float:
        return self.percentiles["50"]

    @property
    def p99(self) -> float:
        return self.percentiles["99"]


def missing_tools() -> list[str]:
    """Install hints for the tools that are not on PATH."""
    return [f"{name}: {hint}" for name, hint in TOOLS.items() if shutil.which(name) is None]


def write_wrk_script(path: Path, body_file: Path) -> Path:
    """A wrk Lua script that POSTs `body_file` as JSON on every request."""
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = assert(io.open("{body_file}", "rb"))\n'
        "wrk.body = f:read(\"*a\")\n"
        "f:close()\n",
        encoding="utf-8",
    )
    return path


def wrk(url: str, script: Path, *, seconds: float, connections: int, pin: bool) -> LoadResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]
    output, cpu = _run(command, pin, timeout=seconds + 30)
    return parse_wrk(output, cpu)


def hey(url: str, body_file: Path, *, rate: int, connections: int, seconds: float, pin: bool) -> LoadResult:
    per_worker = rate / connections
    command = ["hey", "-c", str(connections), "-q", f"{per_worker:g}", "-z", f"{max(1, round(seconds))}s",
               "-m", "POST", "-T", "application/json", "-D", str(body_file)]
    if pin:
        command[1:1] = ["-cpus", "1"]  # one core is all it has when pinned
    output, cpu = _run([*command, url], pin, timeout=seconds + 30)
    return parse_hey(output, cpu)


def _run(command: list[str], pin: bool, timeout: float) -> tuple[str, float]:
    if pin:
        command = ["taskset", "-c", LOADGEN_CPU, *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise LoadgenError(f"{command[0]} did not finish in {timeout:.0f} s") from err
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise LoadgenError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[:500]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, cpu


def _seconds(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(output: str, cpu_seconds: float = 0.0) -> LoadResult:
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not total or not rate:
        raise LoadgenError(f"cannot read wrk's output:\n{output}")
    seconds = _seconds(total.group(2), total.group(3))
    percentiles = {
        m.group(1): _seconds(m.group(2), m.group(3))
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    }
    errors = 0
    if non_2xx := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(non_2xx.group(1))
    if socket := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(n) for n in socket.groups())
    return LoadResult("wrk", int(total.group(1)), seconds, float(rate.group(1)), errors, percentiles,
                      cpu_seconds / seconds if seconds else 0.0, output)


def parse_hey(output: str, cpu_seconds: float = 0.0) -> LoadResult:
    total = re.search(r"Total:\s+([\d.]+) secs", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not total or not rate:
        raise LoadgenError(f"cannot read hey's output:\n{output}")
    seconds = float(total.group(1))
    percentiles = {
        m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(\d+)% in ([\d.]+) secs", output, re.MULTILINE)
    }
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    errors = sum(statuses.values()) - ok
    if "Error distribution:" in output:
        failures = output.split("Error distribution:", 1)[1]
        errors += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s", failures, re.MULTILINE))
    return LoadResult("hey", ok + errors, seconds, float(rate.group(1)), errors, percentiles,
                      cpu_seconds / seconds if seconds else 0.0, output)


# -- the machine and the servers under load --------------------------------------------------------

def busy_cores(seconds: float = 1.0) -> float:
    """How many cores other processes keep busy (from /proc/stat over `seconds`)."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values[:8]) - idle, sum(values[:8])

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


@contextlib.contextmanager
def profiled(pid: int, output: Path | None, seconds: float, notes: list[str]) -> Iterator[None]:
    """py-spy (sampling, from outside) on process `pid` during the block; a summary of its app/ frames
    goes to `notes`."""
    if output is None:
        yield
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(max(1, int(seconds) - 1)),
                            "-r", "200", "-f", "raw", "-o", str(output)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.wait(timeout=seconds + 30)
    if output.exists():
        notes.append(f"profile {output}: " + ", ".join(f"{share:.0%} {frame}" for frame, share in top_frames(output)))


def top_frames(collapsed: Path, prefix: str = "app/", count: int = 8) -> list[tuple[str, float]]:
    """The `count` app/ functions with the largest inclusive share of busy samples (idle waits left out)."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if "Condition.wait" in stack or "Event.wait" in stack:
            continue  # the TLS and file pollers asleep: py-spy does not always see them as idle
        total += int(samples)
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if prefix in f}:
            inclusive[frame] = inclusive.get(frame, 0) + int(samples)
    ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])
    skip = ("(app/service/cli/main.py", "(app/service/http/server.py")  # the whole process: not informative
    return [(frame, n / total) for frame, n in ranked if not any(s in frame for s in skip)][:count]
