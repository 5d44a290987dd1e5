"""torch's intra-op thread count: set for a block of code, then put back.

One context manager, :func:`torch_threads`, for every place that changes the
count: the demo (``n_threads``), latency measurements (one thread), and the
compressors' ``fit`` inside parallel workers (:func:`worker_threads`).

``torch.set_num_threads`` changes the calling thread's OpenMP pool and the
default of the threads started later. Blocks running at the same time in
several threads (joblib's "threading" backend, in-process dask workers) share
one saved value, the count from before the first of them started, which the
last one to end puts back; each block that ends before then puts its own
thread's count back. Nested blocks in one thread restore the outer block's
count.
"""

import os
import sys
import threading
from contextlib import contextmanager

import torch
from joblib.parallel import get_active_backend

__all__ = ["torch_threads", "worker_thread_budget", "worker_threads"]

_lock = threading.Lock()
_users = 0  # blocks inside torch_threads that changed the count, all threads
_before = None  # the count before the first of them


@contextmanager
def torch_threads(n_threads, *, at_most=False):
    """Run the block with torch using ``n_threads`` intra-op threads.

    Parameters
    ----------
    n_threads : int or None
        ``None`` changes nothing.
    at_most : bool, default=False
        Only ever lower the count: a thread already using ``n_threads`` or
        fewer is left as it is.

    Examples
    --------
    >>> import torch
    >>> from skcompress._threads import torch_threads
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    global _users, _before
    current = torch.get_num_threads()
    if n_threads is None or current == n_threads or (at_most and current <= n_threads):
        yield
        return
    with _lock:
        if _users == 0:
            _before = current
        _users += 1
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            torch.set_num_threads(_before if _users == 0 else current)


def worker_thread_budget():
    """Torch threads a fit may use in a parallel worker; None outside one.

    joblib's process backends (loky) and dask's nanny set ``OMP_NUM_THREADS``
    (``cpu_count() // n_jobs``, resp. 1) before the worker imports torch, so
    torch already respects that budget there. Workers that share a process
    (joblib's "threading" backend, dask workers started with
    ``processes=False``) or inherit torch already initialised (the forked
    "multiprocessing" backend) get no such variable: they use 1 thread.
    """
    backend, _ = get_active_backend()
    in_worker = bool(getattr(backend, "nesting_level", 0))
    distributed = sys.modules.get("distributed")  # only if the user imported it
    if not in_worker and distributed is not None:
        try:
            distributed.get_worker()
            in_worker = True
        except ValueError:
            pass
    if not in_worker:
        return None
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return 1


def worker_threads():
    """Limit torch's intra-op threads to the worker's budget during a fit.

    Outside parallel workers, or when torch already uses no more threads than
    the budget (loky and dask worker processes), nothing is changed.
    """
    return torch_threads(worker_thread_budget(), at_most=True)
