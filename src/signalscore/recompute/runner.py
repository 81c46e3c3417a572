"""Running workers: embedded in the server (a thread) or standalone (`signalscore worker`)."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any

from signalscore.config import Settings
from signalscore.db.dialect import concurrent_writers
from signalscore.db.engine import Database, create_db_engine
from signalscore.observability import configure_logging
from signalscore.recompute.worker import Worker, WorkerConfig

log = logging.getLogger("signalscore.worker")


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        batch_size=settings.worker_batch_size,
        lease_seconds=settings.worker_lease_seconds,
        poll_seconds=settings.worker_poll_seconds,
        event_retention_days=settings.event_retention_days,
        decay_sweep_seconds=settings.decay_sweep_seconds,
        webhook_allow_private=settings.webhook_allow_private,
        webhook_timeout_seconds=settings.webhook_timeout_seconds,
        webhook_retry_scale=settings.webhook_retry_scale,
    )


def audit_writer(path: str | None, worker_id: str) -> Any:
    """One line per computed object: `org type id start end worker` (monotonic clock, which
    all processes of a machine share), appended with O_APPEND so lines never interleave."""
    if not path:
        return None

    def write(org_id: str, object_type: str, object_id: str, start: float, end: float) -> None:
        with open(path, "a", encoding="utf-8") as audit:
            audit.write(f"{org_id} {object_type} {object_id} {start:.6f} {end:.6f} {worker_id}\n")

    return write


class EmbeddedWorker:
    """Worker threads inside the API process, woken up by every committed write: one on
    SQLite (it has one writer at a time), `embedded_worker_threads` (2 by default) on
    PostgreSQL, where a worker spends most of its time waiting for the database, so a second
    thread drains a large backlog (a rule change over a big profile) almost twice as fast."""

    def __init__(self, db: Database, settings: Settings) -> None:
        threads = settings.embedded_worker_threads
        if threads is None:
            threads = 2 if concurrent_writers(db.dialect) else 1
        self.workers = [Worker(db, worker_config(settings)) for _ in range(threads)]
        for worker in self.workers:
            worker.audit = audit_writer(settings.worker_audit_log, worker.worker_id)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(
                target=worker.run, args=(self.stop,), name=f"signalscore-worker-{i}", daemon=True
            )
            for i, worker in enumerate(self.workers)
        ]
        db.after_write = self._wake

    def _wake(self) -> None:
        for worker in self.workers:
            worker.wakeup.set()

    @property
    def computed(self) -> int:
        return sum(worker.computed for worker in self.workers)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self._wake()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
HANDLED_SIGNALS = {*STOP_SIGNALS, signal.SIGUSR1}


def _print_stacks() -> None:
    """Every thread's stack, to stderr: what a stuck worker is doing (SIGUSR1)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        print(f"Thread {names.get(ident, ident)}:", file=sys.stderr)
        traceback.print_stack(frame, file=sys.stderr)
    sys.stderr.flush()


def _run_worker_process(settings_json: str) -> None:
    """Entry point of one standalone worker process.

    The worker runs in a thread of its own while the main thread waits for signals with
    `sigtimedwait`, the signals it handles blocked in every thread. A Python signal handler
    would run in the main thread between any two bytecodes, and one that sets a
    `threading.Event` deadlocks when it interrupts that thread while it holds the same
    event's lock (inside `Event.wait` or `clear`, which the worker's loop calls all the
    time): the process then never exits. On SIGTERM or SIGINT the worker finishes the batch
    in hand, releases its leases and exits; SIGKILL ends it at once (its leases expire).
    SIGUSR1 prints every thread's stack to stderr, and the worker carries on."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)  # inherited by every thread
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level)
    db = Database(
        create_db_engine(settings.database_url, connect_timeout=settings.db_connect_timeout)
    )
    worker = Worker(db, worker_config(settings))
    worker.audit = audit_writer(settings.worker_audit_log, worker.worker_id)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,), name="signalscore-worker")
    log.info("worker %s started", worker.worker_id)
    runner.start()
    while runner.is_alive():
        received = signal.sigtimedwait(HANDLED_SIGNALS, 0.5)
        if received is None:
            continue
        if received.si_signo == signal.SIGUSR1:
            _print_stacks()
        elif received.si_signo in STOP_SIGNALS:
            break
        # Anything else is no signal of ours: CPython 3.11 returns a struct of garbage when
        # the wait is interrupted by SIGCONT (a worker paused with SIGSTOP or Ctrl-Z, then
        # resumed), which once stopped the worker.
    stop.set()
    worker.wakeup.set()
    runner.join()
    log.info("worker %s stopped after %d computations", worker.worker_id, worker.computed)
    db.dispose()


def run_workers(settings: Settings, concurrency: int) -> None:
    """Run `concurrency` worker processes until SIGTERM/SIGINT; forward the signal to each."""
    if concurrency == 1:
        _run_worker_process(settings.model_dump_json())
        return
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_run_worker_process,
            args=(settings.model_dump_json(),),
            name=f"signalscore-worker-{i}",
        )
        for i in range(concurrency)
    ]
    for process in processes:
        process.start()
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: each finishes its batch and releases leases

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.is_set() and any(p.is_alive() for p in processes):
        time.sleep(0.2)
    for process in processes:
        process.join()
