"""Pure work on every core, with the same result as doing it in turn.

``ordered_map``: forked workers inherit the items (nothing is pickled on the way in: at 10,000
services the texts to read are 120 MB), each takes every n-th one, and the results come back
in the items' order, so nothing depends on which worker finishes first. ``beside``: one long
piece of work in a forked worker while this process does another. ``shared``: a few long tasks
of unknown length, this process and one forked worker each taking the next. ``ahead``: a worker
forked early, at a lower priority if asked, handed the rest of its input later. Where forking
is not available, or the work is small (forking a large process costs more than it saves), the
work runs here.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

# multiprocessing and concurrent.futures are imported where a worker is forked (or asked
# whether one can be): below the sizes that fork, an edit of the shipped catalog imported them
# for nothing, 6 ms of its 0.29 s (python -X importtime)
if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

_WORK: tuple[Callable[[Any], Any], Sequence[Any]] | None = None  # what forked workers inherit
_BESIDE: Callable[[], Any] | None = None


def ordered_map(function: Callable[[T], R], items: Sequence[T], *, least: int) -> list[R]:
    """``[function(x) for x in items]``, on every core when there are at least ``least`` items.
    ``function`` must be pure and catch what it expects to go wrong (an exception stops the run
    as it would in turn)."""
    global _WORK
    workers = min(os.cpu_count() or 1, 8)
    if len(items) < least or not _can_fork(workers):
        return [function(x) for x in items]
    from concurrent.futures.process import BrokenProcessPool

    _WORK = (function, items)
    # A collection in a worker would walk (and so copy, page by page) the whole inherited heap:
    # what exists before the fork is left out of every collection until the workers are done.
    gc.freeze()
    try:
        pool = _pool(workers)
        try:
            with _forking():
                answers = pool.map(_part, range(workers), [workers] * workers)
            parts = list(answers)
        finally:
            with _uninterrupted():
                pool.shutdown(cancel_futures=True)
    except (OSError, BrokenProcessPool):  # no fork (memory, a process limit), or a worker killed: in turn
        return [function(x) for x in items]
    finally:
        _WORK = None
        gc.unfreeze()
    out: list[Any] = [None] * len(items)
    for start, part in enumerate(parts):
        out[start::workers] = part
    return out


def _part(start: int, step: int) -> list[Any]:
    assert _WORK is not None  # set before the fork
    function, items = _WORK
    return [function(x) for x in items[start::step]]


def beside(function: Callable[[], R], *, worth: bool) -> Callable[[], R]:
    """Start ``function`` (pure: what it changes in this process is lost) in a forked worker
    and return what waits for its result, so this process can do other work meanwhile; when
    it is not ``worth`` a fork, or there is one core, the returned call runs it here."""
    global _BESIDE
    if not worth or not _can_fork(os.cpu_count() or 1):
        return function
    try:
        pool = _pool(1)  # its queues need the system's semaphores, which some sandboxes lack
    except (OSError, ImportError):  # multiprocessing says so by either, by the system
        return function
    from concurrent.futures.process import BrokenProcessPool

    _BESIDE = function
    gc.freeze()  # as in ordered_map; the worker is forked by submit(), this process goes on collecting
    try:
        with _forking():
            future: Future[R] = pool.submit(_beside)
    except OSError:  # no fork (memory, a process limit): in turn, when asked
        pool.shutdown()
        return function
    finally:
        _BESIDE = None
        gc.unfreeze()

    def result() -> R:
        try:
            return future.result()
        except BrokenProcessPool:  # the worker was killed (the kernel's out-of-memory killer): in turn
            return function()
        finally:
            with _uninterrupted():
                pool.shutdown(cancel_futures=True)

    return result


def _beside() -> Any:
    assert _BESIDE is not None  # set before the fork
    return _BESIDE()


def shared(tasks: Sequence[Callable[[], R]], *, worth: bool, meanwhile: Callable[[], object] | None = None) -> list[R]:
    """``[task() for task in tasks]``, shared between this process and one forked worker: each
    takes the next task nobody has taken (a counter both see), so neither waits while the other
    still has work, however long each task turns out to be (an edit's and a cold run's costs
    differ by area: no fixed split suited both). The results come back in the tasks' order,
    and so does the first exception, as in turn, whichever process ran what. Tasks must be
    pure. Not ``worth`` a fork, or one core: in turn, here.

    ``meanwhile``: work of this process's own that needs no task's result, done here once no
    task is left to take, while the worker finishes its last one and sends what it made (in
    turn: after the tasks). Its exception is raised after any task's."""
    global _SHARED
    if not worth or len(tasks) < 2 or not _can_fork(os.cpu_count() or 1):
        return _in_turn(tasks, meanwhile)
    import multiprocessing

    try:
        # a shared counter and the pool's queues need the system's semaphores, which some
        # sandboxes lack: then in turn
        counter = multiprocessing.get_context("fork").Value("i", 0)
        pool = _pool(1)
    except (OSError, ImportError):  # multiprocessing says so by either, by the system
        return _in_turn(tasks, meanwhile)
    _SHARED = (tasks, counter)
    gc.freeze()  # as in ordered_map
    try:
        with _forking():
            future: Future[dict[int, tuple[bool, Any]]] | None = pool.submit(_shared_part)
    except OSError:  # no fork (memory, a process limit): all of them here
        future = None
    finally:
        _SHARED = None
        gc.unfreeze()
    waited: tuple[bool, Any] = (True, None)
    try:
        outcomes = _take(tasks, counter)
        if meanwhile is not None:
            waited = _outcome(meanwhile)
        if future is not None:
            # killed (BrokenProcessPool), or an outcome that cannot travel back: what it took runs
            # here, below (a task's own error is an outcome, never this)
            with suppress(Exception):
                outcomes.update(future.result())
        for i, task in enumerate(tasks):  # what the worker took but never sent: here
            if i not in outcomes:
                outcomes[i] = _outcome(task)
    finally:
        with _uninterrupted():
            pool.shutdown(cancel_futures=True)
    results = []
    for i in range(len(tasks)):
        ok, value = outcomes[i]
        if not ok:
            raise value
        results.append(value)
    if not waited[0]:
        raise waited[1]
    return results


_SHARED: tuple[Sequence[Callable[[], Any]], Any] | None = None  # what the forked worker inherits


def _in_turn(tasks: Sequence[Callable[[], R]], meanwhile: Callable[[], object] | None) -> list[R]:
    results = [task() for task in tasks]
    if meanwhile is not None:
        meanwhile()
    return results


def _take(tasks: Sequence[Callable[[], Any]], counter: Any) -> dict[int, tuple[bool, Any]]:
    """Run the tasks not taken yet, one at a time, until none is left: each one's outcome."""
    outcomes: dict[int, tuple[bool, Any]] = {}
    while True:
        with counter.get_lock():
            i = counter.value
            counter.value = i + 1
        if i >= len(tasks):
            return outcomes
        outcomes[i] = _outcome(tasks[i])


def _outcome(task: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, task()
    except Exception as exc:  # raised in the tasks' order once all are done (``shared``)
        return False, exc


def _shared_part() -> dict[int, tuple[bool, Any]]:
    assert _SHARED is not None  # set before the fork
    return _take(*_SHARED)


class Ahead(Generic[S, R]):
    """A worker started early (``ahead``): it did ``first`` at once; ``then`` hands it the
    rest of its input, ``result`` waits for what it made of both. Closing it waits for its
    ``later`` once it answered, and ends a worker whose result is no longer wanted (the run
    stopped on an error)."""

    def __init__(
        self, first: Callable[[], S], then: Callable[[S, bytes], R], later: Callable[[S, R], None] | None = None
    ) -> None:
        self._first, self._then, self._later = first, then, later
        self._payload: bytes | None = None
        self._process: Any = None
        self._conn: Any = None
        self._sending: threading.Thread | None = None
        self._answered = False

    def send(self, payload: bytes) -> None:
        """Hand the worker the rest of its input, from a thread: the worker reads it only once
        ``first`` is done, and a large payload fills the pipe long before."""
        self._payload = payload
        if self._conn is not None:
            self._sending = threading.Thread(target=self._send, name="nexus-ahead-send", daemon=True)
            self._sending.start()

    def _send(self) -> None:
        with suppress(OSError):  # the worker is gone (killed): result() finds out
            self._conn.send_bytes(self._payload)

    def result(self) -> R:
        assert self._payload is not None, "send() first"
        if self._conn is not None:
            try:
                kind, value = self._conn.recv()
            except (OSError, EOFError):  # killed (the out-of-memory killer): in turn, below
                kind, value = "gone", None
            if kind == "done":
                self._answered = True  # doing its ``later`` now: close() waits for it
                return cast("R", value)
            self.close()
            if kind == "raised":
                raise value
        made = self._first()
        result = self._then(made, self._payload)
        if self._later is not None:
            self._later(made, result)
        return result

    def close(self) -> None:
        with _uninterrupted():
            self._close()

    def _close(self) -> None:
        if self._process is not None:
            if self._answered:
                self._process.join(LATER_WAIT)
            if self._process.is_alive():
                self._process.kill()  # its pipe closes: a send still under way stops
            self._process.join()
            if self._sending is not None:
                self._sending.join()
            self._conn.close()
            self._process = self._conn = self._sending = None


def ahead(
    first: Callable[[], S],
    then: Callable[[S, bytes], R],
    *,
    worth: bool,
    nice: int = 0,
    later: Callable[[S, R], None] | None = None,
) -> Ahead[S, R]:
    """Start a forked worker that does ``first`` now, while this process does other work
    before it has the rest of the input (``Ahead.send``: bytes, as the caller encodes them),
    and then ``then(what first made, those bytes)``; what ``first`` made stays in the
    worker, never sent back. Forked early, the worker shares a small heap. Both must be
    pure (what they change in this process is lost). Not ``worth`` a fork, or one core:
    both run here, in ``result()``. ``nice``: how much lower the worker's priority is (where
    the system allows it): work that is wanted late yields the cores to the work before it.
    ``later(what first made, the result)``: what only comes after the result (writing what
    the next run reads), done by the worker once it has answered, while this process goes
    on; ``Ahead.close`` waits for it (up to LATER_WAIT seconds)."""
    job: Ahead[S, R] = Ahead(first, then, later)
    if not worth or not _can_fork(os.cpu_count() or 1):
        return job
    import multiprocessing

    context = multiprocessing.get_context("fork")
    here, there = context.Pipe()
    process = context.Process(target=_ahead, args=(first, then, later, there, os.getpid(), nice), daemon=True)
    try:
        with _forking():
            process.start()
    except OSError:  # no fork (memory, a process limit): in turn, when asked
        here.close()
        there.close()
        return job
    there.close()
    job._process, job._conn = process, here
    return job


def _ahead(
    first: Callable[[], Any],
    then: Callable[[Any, bytes], Any],
    later: Callable[[Any, Any], None] | None,
    conn: Any,
    parent: int,
    nice: int,
) -> None:
    _worker_start(parent)
    if nice:
        with suppress(OSError, AttributeError):  # no such call (not a Unix), or not allowed: as it is
            os.nice(nice)
    try:
        made = first()
        payload = conn.recv_bytes()
        result = then(made, payload)
        message: tuple[str, Any] = ("done", result)
    except EOFError:
        return  # the run stopped before it sent the rest: nothing wanted
    except Exception as exc:  # said where result() is asked for, as if it had run there
        message = ("raised", exc)
    try:
        conn.send(message)
    except Exception:  # an exception that does not pickle: result() runs it in turn, and raises it there
        conn.send(("failed", None))
        return
    if later is not None and message[0] == "done":
        with suppress(Exception):  # only the next run wanted it; never a traceback on the terminal
            later(made, result)


# seconds Ahead.close waits for a worker's ``later`` (a cache file written for the next run)
# before it ends the worker: the next run then does without what it would have read
LATER_WAIT = 60.0


def _pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_start,
        initargs=(os.getpid(),),
    )


@contextmanager
def _forking() -> Iterator[None]:
    """Around a fork: Ctrl-C held back in this thread (so in the worker it forks) until the
    worker ignores it (``_worker_start``); here it comes once the fork is done."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ending the workers, which ignore Ctrl-C (``_worker_start``): a Ctrl-C meanwhile (pressed
    twice) stops the run once they are ended, not halfway, which left a worker running on (or
    the pool's threads at exit waiting for one) and printed a traceback from inside the pool.
    Only the main thread may set a handler; elsewhere this is as it was."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    pressed: list[int] = []
    signal.signal(signal.SIGINT, lambda number, _frame: pressed.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pressed:
            signal.raise_signal(signal.SIGINT)  # now, to the handler it was for


def _worker_start(parent: int) -> None:
    """In each worker, first. Ctrl-C is ignored: a terminal sends it to every process of the
    run, and it is for the run to stop (which ends its workers, or waits for their current
    work), never the worker on its own. Interrupted halfway through sending its result, a pool's
    worker left the pool reading the rest of the message for ever, so the run hung instead of
    stopping; interrupted in its survey, the early worker printed a traceback.

    Then it exits once the process that forked it is gone (kill -9, the out-of-memory killer).
    Left behind, a worker blocks for ever writing a result nobody reads, holding what it
    inherited: the output folder's lock, so every later run would wait for it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held back by ``_forking``

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _can_fork(workers: int) -> bool:
    import multiprocessing

    return workers >= 2 and "fork" in multiprocessing.get_all_start_methods()
