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


def test_a_signal_during_submit_is_delivered_after_it(monkeypatch):
    """Ctrl-C while ``submit`` starts a worker stopped it between starting the worker and
    sending its start-up data (the worker then printed an EOFError traceback): it is held
    back until ``submit`` is done, then raised as usual."""
    import signal

    import pytest

    real = processes.ProcessPoolExecutor.submit
    completed = []
    asked, sent = threading.Event(), threading.Event()

    def other_thread() -> None:  # started before submit: Ctrl-C is not blocked in it
        asked.wait(timeout=60)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        sent.set()

    def interrupted_submit(self, fn, /, *args, **kwargs):
        asked.set()  # the signal arrives in another thread while submit runs
        sent.wait(timeout=60)
        future = real(self, fn, *args, **kwargs)
        completed.append(future)
        return future

    monkeypatch.setattr(processes.ProcessPoolExecutor, "submit", interrupted_submit)
    pool = processes.Pool(1, mp_context=processes.get_context("spawn"))
    threading.Thread(target=other_thread, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.submit(_nap, 0.0)
        assert len(completed) == 1  # the worker was started and given its work first
        assert completed[0].result(timeout=60) == 0.0
    finally:
        pool.shutdown(wait=True)
