"""Run the scratchsat CLI with a pause at a chosen point, for the fault-injection tests.

    python fault_harness.py MODULE:ATTRIBUTE N GATE -- scratchsat arguments…

Wraps the callable MODULE.ATTRIBUTE; at its N-th call, prints ``PAUSED`` and waits until the
file GATE exists (the test sends its signal meanwhile), then goes on with the call. Nothing
else changes: the command, its signal handling and its files are the real ones.
"""

import importlib
import os
import sys
import time


def main() -> None:
    target, count, gate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    args = sys.argv[sys.argv.index("--") + 1 :]
    module_name, attribute = target.split(":")
    module = importlib.import_module(module_name)
    owner_name, _, name = attribute.rpartition(".")
    owner = getattr(module, owner_name) if owner_name else module
    real = getattr(owner, name)
    calls = 0

    def paused(*a, **k):
        nonlocal calls
        calls += 1
        if calls == count:
            print("PAUSED", flush=True)
            deadline = time.monotonic() + 60
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.02)
        return real(*a, **k)

    setattr(owner, name, paused)
    sys.argv = ["scratchsat", *args]
    from scratchsat.cli import main as cli

    cli()


if __name__ == "__main__":  # spawned workers import this file as __mp_main__: not them
    main()
