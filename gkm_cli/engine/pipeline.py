"""A small bounded pipeline: reader thread -> network on the calling thread -> writer thread.

Decoding and encoding (numpy / OpenCV / zlib, which release the GIL) overlap the network. The
queues hold at most ``depth`` images each, so memory stays bounded: with ``depth = 1`` at most
one decoded image waits for the network and one result waits for the writer.

Per-image problems (a corrupt input, a non-finite result, an output that cannot be written:
any :class:`GkmError` from ``skip``'s verdict, ``load``, ``process`` or ``write``) become a
``failed`` record and the run goes on. A write error that every later write would hit too
(disk full, quota, read-only file system, closed pipe: ``ImageWriteError.errno`` in
:data:`gkm_cli.fileio.STOPPING_ERRNOS`) is recorded as that image's failure, then stops the run
and is raised once the threads are wound down. Records are emitted in input order, from the
writer thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from gkm_cli.errors import GkmError
from gkm_cli.fileio import stops_the_run

J = TypeVar("J")

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
_POLL_S = 0.1


@dataclass(frozen=True)
class Record:
    """Outcome of one input: ``status`` ok | skipped | failed; ``seconds`` spent reading,
    processing and writing it; ``megapixels`` of the input (None when not read)."""

    input: str
    output: str
    status: str
    seconds: float
    error: str | None = None
    megapixels: float | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stages(Generic[J]):
    """The work of a run. ``skip(job)``, ``load(job)`` run on the reader thread, ``process(job,
    loaded)`` on the calling thread, ``write(job, processed)`` on the writer thread;
    ``megapixels(loaded)`` sizes an input for the records and the progress rate. ``skip``
    returns True (already done), False (do it) or a message (it cannot be done: failed)."""

    skip: Callable[[J], bool | str]
    load: Callable[[J], Any]
    process: Callable[[J, Any], Any]
    write: Callable[[J, Any], None]
    megapixels: Callable[[Any], float]
    names: Callable[[J], tuple[str, str]]  # (input, output) as shown in records


class _Stop(Exception):
    pass


def run_pipeline(
    jobs: Sequence[J],
    stages: Stages[J],
    on_record: Callable[[Record], None],
    *,
    depth: int = 1,
    write_delay_s: float = 0.0,
    cancel: threading.Event | None = None,
) -> list[Record]:
    """Run every job through the three stages; returns the records in input order.

    ``cancel``, set from another thread, winds the stages down at their next hand-over (the
    records so far are returned). ``write_delay_s`` (tests only) sleeps after each write, to
    interrupt a run mid-folder.
    """
    to_net: queue.Queue[object] = queue.Queue(maxsize=depth)
    to_writer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = cancel if cancel is not None else threading.Event()
    errors: list[BaseException] = []
    records: list[Record] = []
    done = object()

    def put(q: queue.Queue[object], item: object) -> None:
        while True:
            if stop.is_set():
                raise _Stop()
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(q: queue.Queue[object]) -> Any:
        while True:
            if stop.is_set():
                raise _Stop()
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    def reader() -> None:
        try:
            for job in jobs:
                inp, out = stages.names(job)
                start = time.perf_counter()
                try:
                    verdict = stages.skip(job)
                except GkmError as e:
                    verdict = e.message
                if isinstance(verdict, str):
                    put(to_net, Record(inp, out, FAILED, time.perf_counter() - start, verdict))
                    continue
                if verdict:
                    put(to_net, Record(inp, out, SKIPPED, 0.0))
                    continue
                try:
                    loaded = stages.load(job)
                except GkmError as e:
                    put(to_net, Record(inp, out, FAILED, time.perf_counter() - start, e.message))
                    continue
                put(to_net, (job, loaded, time.perf_counter() - start))
            put(to_net, done)
        except _Stop:
            pass
        except BaseException as e:
            errors.append(e)
            stop.set()

    def writer() -> None:
        try:
            while True:
                item = get(to_writer)
                if item is done:
                    return
                if isinstance(item, Record):
                    records.append(item)
                    on_record(item)
                    continue
                job, processed, seconds, mp = item
                inp, out = stages.names(job)
                start = time.perf_counter()
                try:
                    stages.write(job, processed)
                except GkmError as e:
                    record = Record(inp, out, FAILED, seconds + time.perf_counter() - start, e.message, mp)
                    records.append(record)
                    on_record(record)
                    if stops_the_run(getattr(e, "errno", None)):
                        raise
                    continue
                record = Record(inp, out, OK, seconds + time.perf_counter() - start, None, mp)
                records.append(record)
                on_record(record)
                if write_delay_s:
                    time.sleep(write_delay_s)
        except _Stop:
            pass
        except BaseException as e:
            errors.append(e)
            stop.set()

    threads = [
        threading.Thread(target=reader, name="gkm-reader", daemon=True),
        threading.Thread(target=writer, name="gkm-writer", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        while True:
            item = get(to_net)
            if item is done:
                put(to_writer, done)
                break
            if isinstance(item, Record):
                put(to_writer, item)
                continue
            job, loaded, seconds = item
            inp, out = stages.names(job)
            mp = stages.megapixels(loaded)
            start = time.perf_counter()
            try:
                processed = stages.process(job, loaded)
            except GkmError as e:
                put(to_writer, Record(inp, out, FAILED, seconds + time.perf_counter() - start, e.message, mp))
                continue
            finally:
                del loaded
            put(to_writer, (job, processed, seconds + time.perf_counter() - start, mp))
            del processed
        threads[1].join()
    except _Stop:
        pass
    except BaseException:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        raise
    stop.set()
    for t in threads:
        t.join(timeout=30)
    if errors:
        raise errors[0]
    return records
