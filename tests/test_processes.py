"""Worker pools: stopping one on the way out leaves nothing on the console."""

import threading
import time

from scratchsat.geo import processes


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_leaving_map_then_killing_the_workers_prints_nothing(monkeypatch):
    """Ctrl-C inside ``yield from pool.map(...)`` closes the map, then :func:`stop` kills the
    workers. When the manager thread sees the dead workers before its shutdown flag (a race a
    flaky SIGTERM test lost), it marks every pending future broken; one the map had cancelled
    made Python 3.11 print ``InvalidStateError`` with a traceback. Killing the workers before
    ``stop`` makes that order certain."""
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    monkeypatch.setitem(processes.state, "killed_workers", False)
    pool = processes.Pool(2, mp_context=processes.get_context("spawn"))
    results = pool.map(_nap, [0.05] * 40)
    assert next(results) == 0.05  # the workers are up and taking work
    manager = pool._executor_manager_thread
    results.close()
    for process in list(pool._processes.values()):
        process.kill()
    manager.join(timeout=30)
    processes.stop(pool)
    assert not manager.is_alive()
    assert [repr(f.exc_value) for f in failures] == []
