"""Row blocks on the machine's cores: work over a leading user axis split into contiguous blocks of
rows, one per thread, run on a shared thread pool (RecVectorEnv's `threads`).

numpy releases the GIL in its copies, gathers and ufunc loops, so blocks of large arrays run at
once on free cores. Each row is computed by the same operations whatever the block it falls in, so
the result is the same bytes for any number of blocks (one: the caller's thread alone). Small work
stays on the caller's thread: a block is worth a thread from about `MIN_BLOCK` elements on.
Threads pay only where cores are idle: they add no CPU time, and on a loaded machine a block
waits for a core (RecVectorEnv keeps one thread unless asked).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

MIN_BLOCK = 1 << 16  # elements of work per block, below which handing a block to a thread costs more than it saves
MAX_THREADS = 8

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1


def cores() -> int:
    """Cores this process may use: its CPU affinity where the OS tells it, at most OMP_NUM_THREADS
    where that is set. Ray sets OMP_NUM_THREADS to the CPUs it assigns a worker (an RLlib env runner
    gets `num_cpus_per_env_runner`), so runners side by side split the cores instead of each taking
    them all; a user who pins torch's threads with it pins these too."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    return max(1, min(n, int(omp))) if omp.isdigit() else n


def n_blocks(n_rows: int, row_size: int, threads: int | None = None) -> int:
    """How many blocks `n_rows` rows of `row_size` elements each are split into: at most `threads`
    (None: one per core, at most MAX_THREADS), each of at least MIN_BLOCK elements."""
    limit = min(cores(), MAX_THREADS) if threads is None else threads
    return max(1, min(limit, n_rows, n_rows * row_size // MIN_BLOCK))


def for_row_blocks(work: Callable[[slice], None], n_rows: int, row_size: int, threads: int | None = None) -> None:
    """Call `work(rows)` on contiguous row slices that cover range(n_rows) (`n_blocks` of them): the
    first on the caller's thread, the others on the pool at the same time. `work` writes its rows
    only. An exception in a block is raised here after every block has finished."""
    k = n_blocks(n_rows, row_size, threads)
    if k == 1:
        work(slice(0, n_rows))
        return
    bounds = [n_rows * i // k for i in range(k + 1)]
    blocks = [slice(bounds[i], bounds[i + 1]) for i in range(k)]
    futures = [_executor().submit(work, rows) for rows in blocks[1:]]
    try:
        work(blocks[0])
    finally:
        for future in futures:
            future.exception()  # wait for every block before anything is raised or read
    for future in futures:
        future.result()


def _executor() -> ThreadPoolExecutor:
    """The process's pool (a forked child makes its own: threads do not survive a fork)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=MAX_THREADS - 1, thread_name_prefix="driftrec-rows")
            _pool_pid = os.getpid()
        return _pool
