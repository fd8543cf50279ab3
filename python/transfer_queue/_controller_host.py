"""A controller process that runs a custom Python sampler.

``python -m transfer_queue._controller_host --host H --port P --storage-units N
--unit-capacity-mb M [--polling-mode]`` reads a pickled sampler (a
``BaseSampler`` instance, pickled with cloudpickle where available) from
stdin, runs ``_tqds.Controller`` in this process with it, and prints the same
readiness lines as ``tq controller`` ("... listening on tcp://..."), so
``TransferQueueControllerHandle`` reads either program alike. It serves until
SIGTERM or SIGINT, then stops the controller and exits 0. The sampler runs on
the controller's thread; the main thread only waits for the signal.
"""

from __future__ import annotations

import argparse
import pickle
import signal
import sys
import threading


def _parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m transfer_queue._controller_host", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--storage-units", type=int, default=2)
    p.add_argument("--unit-capacity-mb", type=int, default=8192)
    p.add_argument("--unit-capacity-samples", type=int, default=0)
    p.add_argument("--max-samples-per-partition", type=int, default=None)
    p.add_argument("--max-samples-total", type=int, default=None)
    p.add_argument("--polling-mode", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sampler = pickle.loads(sys.stdin.buffer.read())  # cloudpickle output loads with plain pickle

    import _tqds

    from transfer_queue.controller import pre_alloc_sample_num

    controller = _tqds.Controller(f"tcp://{args.host}:{args.port}", args.storage_units, args.unit_capacity_mb,
                                  polling_mode=args.polling_mode, sampler=sampler,
                                  pre_alloc_samples=pre_alloc_sample_num(),
                                  unit_capacity_samples=args.unit_capacity_samples,
                                  **{k: getattr(args, k) for k in ("max_samples_per_partition", "max_samples_total")
                                     if getattr(args, k) is not None})
    try:
        print(f"tq controller listening on {controller.address}")
        for unit in controller.storage_units:
            print(f"tq storage unit listening on {unit}")
        sys.stdout.flush()
        while not stop.wait(1.0):  # a timed wait, so signal handlers run promptly
            pass
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
