"""Crafting skcompress files and running loads in a watched child process.

Every crafted case runs in a forked child (``run_cases``): a hang in C code,
a crash, ``SystemExit`` or a memory bomb cannot take the test process down,
and each case's time and peak memory are measured on its own:

- time: ``signal.setitimer`` raises :class:`CaseTimeout` (a ``BaseException``,
  so that no ``except Exception`` in the loader can swallow it) after
  ``time_limit``; the parent kills a child that does not answer in time
  (a loop in C code that never returns to the interpreter);
- memory: the peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs``) minus the resident set before the case; the
  address space is capped a little above the current one, so an allocation
  of gigabytes fails (``MemoryError``) instead of exhausting the machine:
  a ``FormatError`` that only reports a ``MemoryError`` does not count.
"""

import copy
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field

from skcompress.io import FormatError, container, loads
from skcompress.io.codecs import zstd

TIME_LIMIT = 2.0
MEMORY_LIMIT_MB = 200.0
# allocations beyond this headroom above the child's address space fail
ADDRESS_HEADROOM = 1 << 30
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CaseTimeout(BaseException):
    """Raised in a child when a case runs past its time limit."""


@dataclass
class Outcome:
    """What one case did: ``kind`` is ``format_error``, ``loaded`` (the case
    returned; ``predict_error`` holds a failure of ``predict`` after the
    load), ``error`` (another exception), ``timeout``, ``hang`` (the child
    stopped answering and was killed) or ``died`` (the child exited)."""

    kind: str
    error: str = ""
    message: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0
    result: dict = field(default_factory=dict)
    probe: dict = field(default_factory=dict)

    @property
    def summary(self):
        text = f"{self.kind}"
        if self.error:
            text += f" {self.error}: {self.message[:300]}"
        if self.result.get("predict_error"):
            text += f" (predict failed: {self.result['predict_error'][:300]})"
        return text + f" [{self.seconds:.2f} s, {self.peak_mb:.0f} MB]"


def _status(key):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:  # pragma: no cover - then the peak covers earlier cases
        pass


def _on_alarm(signum, frame):
    raise CaseTimeout


def _run_one(case, probe, time_limit):
    out = {}
    _reset_peak()
    before = _status("VmRSS")
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        result = case()
        signal.setitimer(signal.ITIMER_REAL, 0)
        out.update(kind="loaded", result=result if isinstance(result, dict) else {})
    except CaseTimeout:
        out.update(kind="timeout", error="CaseTimeout",
                   message=f"ran past {time_limit} s")
    except FormatError as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        out.update(kind="format_error", error=type(exc).__name__, message=str(exc))
    except BaseException as exc:  # everything else, SystemExit included
        signal.setitimer(signal.ITIMER_REAL, 0)
        out.update(kind="error", error=type(exc).__name__,
                   message=f"{exc}\n{traceback.format_exc()[-2000:]}")
    out["seconds"] = time.perf_counter() - start
    out["peak_mb"] = max(0, _status("VmHWM") - before) / 2**20
    if probe is not None:
        try:
            out["probe"] = probe()
        except BaseException as exc:  # pragma: no cover
            out["probe"] = {"error": repr(exc)}
    return out


def _child(cases, probe, time_limit, write_fd):
    import torch

    # a thread pool the parent started does not exist in a forked child:
    # torch must not try to use it (one thread, as in DataLoader workers)
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _on_alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _status("VmSize") + ADDRESS_HEADROOM
    if hard == resource.RLIM_INFINITY or cap < hard:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    for index, case in cases:
        out = _run_one(case, probe, time_limit)
        out["index"] = index
        os.write(write_fd, json.dumps(out, default=str).encode() + b"\n")


def run_cases(cases, *, probe=None, time_limit=TIME_LIMIT, grace=15.0):
    """Run the zero-argument callables ``cases`` one by one in forked children.

    Returns one :class:`Outcome` per case. A case's return value (a dict)
    becomes ``Outcome.result``; ``probe()`` runs after each case and its dict
    becomes ``Outcome.probe``.
    """
    outcomes = [None] * len(cases)
    pending = list(enumerate(cases))
    while pending:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 0
            try:
                os.close(read_fd)
                _child(pending, probe, time_limit, write_fd)
            except BaseException:
                code = 3
            finally:
                os._exit(code)
        os.close(write_fd)
        buffer, done = b"", set()
        deadline = time.monotonic() + time_limit + grace
        killed = False
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(remaining, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                out = json.loads(line)
                index = out.pop("index")
                outcomes[index] = Outcome(**out)
                done.add(index)
                deadline = time.monotonic() + time_limit + grace
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
        rest = [(i, c) for i, c in pending if i not in done]
        if rest:
            index = rest[0][0]
            if killed:
                outcomes[index] = Outcome(
                    "hang", "Hang", f"no answer within {time_limit + grace:.0f} s; "
                    "killed", seconds=time_limit + grace)
            else:
                outcomes[index] = Outcome(
                    "died", "Died", f"the child process ended (wait status "
                    f"{status}) during this case")
            rest = rest[1:]
        pending = rest
    return outcomes


def run_case(case, **kwargs):
    return run_cases([case], **kwargs)[0]


def check_format_error(outcome, match=None, *, time_limit=TIME_LIMIT,
                       memory_mb=MEMORY_LIMIT_MB, what=""):
    """Assert that a case ended in a FormatError, fast and small."""
    where = f"{what}: " if what else ""
    assert outcome.kind == "format_error", f"{where}{outcome.summary}"
    assert "MemoryError" not in outcome.message, (
        f"{where}only a failed allocation stopped the load: {outcome.summary}")
    assert outcome.seconds < time_limit, f"{where}too slow: {outcome.summary}"
    assert outcome.peak_mb < memory_mb, f"{where}too much memory: {outcome.summary}"
    if match is not None:
        import re

        assert re.search(match, outcome.message, re.IGNORECASE), (
            f"{where}message does not match {match!r}: {outcome.summary}")


def acceptable(outcome, *, time_limit=TIME_LIMIT, memory_mb=MEMORY_LIMIT_MB):
    """For fuzzing: a clean FormatError, or a load whose predict worked."""
    if outcome.seconds >= time_limit or outcome.peak_mb >= memory_mb:
        return False
    if outcome.kind == "format_error":
        return "MemoryError" not in outcome.message
    return outcome.kind == "loaded" and not outcome.result.get("predict_error")


# ------------------------------------------------------------------ loading
def loads_case(data, X=None, **kwargs):
    """A case: ``loads(data, **kwargs)``, then ``predict_proba(X)`` if given."""

    def case():
        net = loads(data, **kwargs)
        out = {"net": type(net).__name__}
        if X is not None:
            try:
                proba = net.predict_proba(X)
                out["proba"] = [list(map(float, row)) for row in proba]
            except CaseTimeout:
                raise
            except BaseException as exc:
                out["predict_error"] = f"{type(exc).__name__}: {exc}"
        return out

    return case


def load_case(file, **kwargs):
    from skcompress.io import load

    def case():
        net = load(file, **kwargs)
        return {"net": type(net).__name__}

    return case


# ----------------------------------------------------------------- crafting
def unpack(data):
    """``(header, blob)`` of a file; the header is a fresh dict."""
    header, blob = container.unpack(data)
    return copy.deepcopy(header), bytes(blob)


def pack(header, blob):
    """A file of ``header`` and ``blob``, with its checksums recomputed."""
    return container.pack(header, bytes(blob))


def pack_text(text, blob=b"", version=container.FORMAT_VERSION):
    """A file whose header is the raw bytes ``text`` (any JSON, or none)."""
    stored = zstd.compress(text, level=3, dictionary=container.HEADER_DICTIONARY)
    prefix = container.PREFIX.pack(container.MAGIC, version, 0, 0, len(stored),
                                   zlib.crc32(stored), len(blob), zlib.crc32(blob))
    return prefix + stored + bytes(blob)


def entry(header, name):
    for item in header["tensors"]:
        if item.get("name") == name:
            return item
    raise KeyError(name)


def split_streams(header, blob):
    """``{name: [stream bytes, ...]}`` of every tensor that stores streams."""
    out, offset = {}, 0
    for item in header["tensors"]:
        if "same" in item:
            continue
        parts = []
        for length in item["streams"]:
            parts.append(bytes(blob[offset:offset + length]))
            offset += length
        out[item["name"]] = parts
    assert offset == len(blob)
    return out


def join_streams(header, streams):
    """The blob of ``streams`` (``{name: [bytes, ...]}``), in header order,
    with every entry's stream lengths set to match."""
    parts = []
    for item in header["tensors"]:
        if "same" in item or item.get("name") not in streams:
            continue
        item["streams"] = [len(s) for s in streams[item["name"]]]
        parts.extend(streams[item["name"]])
    return b"".join(parts)


def zstd_frame(content_size, payload=b"\0", block_size=None):
    """A hand-made zstd frame that declares ``content_size`` bytes and holds
    one RLE block of ``block_size`` (default: ``len(payload)``) copies of
    ``payload[0]``."""
    descriptor = (3 << 6) | (1 << 5)  # 8-byte content size, single segment
    size = len(payload) if block_size is None else block_size
    block = (size << 3) | (1 << 1) | 1  # last block, RLE
    return (ZSTD_MAGIC + bytes([descriptor]) + struct.pack("<Q", content_size)
            + struct.pack("<I", block)[:3] + payload[:1])


def zstd_streams(header, blob):
    """``[(name, stream index), ...]`` of the streams that are zstd frames."""
    return [(name, i) for name, parts in split_streams(header, blob).items()
            for i, part in enumerate(parts) if part.startswith(ZSTD_MAGIC)]
