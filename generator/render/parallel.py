"""Rendering on every core, deterministically: the same results, in the same order, as running
the tasks one after another.

The tasks are closures over the run's compiled templates and data. Workers are forked after the
tasks are set, so nothing is pickled on the way in; only the results (text) come back. Below
``PARALLEL_FROM`` tasks, or with one core, or where the platform cannot fork, the tasks run here
in order: starting workers costs more than small catalogs render in.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

PARALLEL_FROM = 500  # tasks (a service each): the shipped catalog's 43 render here
MAX_WORKERS = 8

_tasks: Sequence[Callable[[], Any]] = ()  # what the forked workers run, by index


def run_all(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Each task's result, in the tasks' order; an exception a task raised is raised here."""
    global _tasks
    workers = min(os.cpu_count() or 1, MAX_WORKERS, len(tasks))
    if len(tasks) < PARALLEL_FROM or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [task() for task in tasks]
    chunks = [range(i, len(tasks), workers) for i in range(workers)]
    results: list[Any] = [None] * len(tasks)
    _tasks = tasks
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for chunk, done in zip(chunks, pool.map(_run, chunks), strict=True):
                for i, result in zip(chunk, done, strict=True):
                    results[i] = result
    finally:
        _tasks = ()
    return results


def _run(indexes: range) -> list[Any]:
    return [_tasks[i]() for i in indexes]
