"""The watched child process of helpers.run_cases measures what the other
tests rely on: time, peak memory, exceptions, and a child that dies."""

import os
import sys
import time

import numpy as np

from skcompress.io import FormatError

from .helpers import acceptable, check_format_error, run_cases


def _allocate(n_bytes):
    def case():
        block = np.ones(n_bytes, dtype=np.uint8)
        return {"sum": int(block[::4096].sum())}

    return case


def _sleep():
    time.sleep(5)


def _spin():
    while True:
        pass


def _raise(exc):
    def case():
        raise exc

    return case


def _die():
    os._exit(7)


def _huge():
    np.empty(2**36, dtype=np.uint8)  # 64 GiB: past the child's address space


def test_run_cases_measures_and_survives():
    cases = [_allocate(300 * 2**20), _allocate(10 * 2**20),
             _raise(FormatError("crafted")), _raise(SystemExit(3)),
             _raise(KeyboardInterrupt()), _die, _huge, _allocate(1)]
    big, small, error, exit_, interrupt, died, huge, last = run_cases(cases)
    assert big.kind == "loaded" and big.peak_mb > 250, big.summary
    assert not acceptable(big)
    assert small.kind == "loaded" and small.peak_mb < 50, small.summary
    assert acceptable(small)
    check_format_error(error, "crafted")
    assert exit_.kind == "error" and exit_.error == "SystemExit", exit_.summary
    assert interrupt.kind == "error" and interrupt.error == "KeyboardInterrupt"
    assert died.kind == "died", died.summary
    assert huge.kind == "error" and huge.error == "MemoryError", huge.summary
    assert last.kind == "loaded", "the cases after a dead child run in a new one"
    assert "numpy" in sys.modules  # and this process is still here


def test_run_cases_stops_slow_cases():
    started = time.monotonic()
    sleep, spin, last = run_cases([_sleep, _spin, _allocate(1)], time_limit=0.2,
                                  grace=2.0)
    assert time.monotonic() - started < 5
    assert sleep.kind == "timeout" and spin.kind == "timeout", (sleep, spin)
    assert not acceptable(sleep)
    assert last.kind == "loaded"


def test_a_child_stuck_outside_the_interpreter_is_killed():
    def stuck():
        import signal

        signal.signal(signal.SIGALRM, signal.SIG_IGN)  # as if in C code
        time.sleep(30)

    started = time.monotonic()
    hang, last = run_cases([stuck, _allocate(1)], time_limit=0.2, grace=0.5)
    assert time.monotonic() - started < 5
    assert hang.kind == "hang", hang.summary
    assert last.kind == "loaded"
