"""Where a run's time went, stage by stage: what `nexus generate --timings` prints.

Each stage gets its wall time, this process's CPU time and its workers' (the forked processes
that render, check and compare beside it on a large catalog; their CPU is counted in the stage
that waited for them, from the kernel's accounting of ended children). A benchmark times whole
processes; this says which stage to look at, on the user's own catalog and machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Stage:
    name: str
    wall: float  # seconds
    cpu: float  # this process's user + system seconds
    workers: float  # user + system seconds of the workers that ended during the stage


@dataclass
class Timings:
    """The stages of one run, in the order they ran (a stage that raised is kept, as far as it got)."""

    stages: list[Stage] = field(default_factory=list)
    run: Stage | None = None  # the whole run (``whole``), when it was timed

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        with _timed(name, self.stages.append):
            yield

    @contextmanager
    def whole(self) -> Iterator[None]:
        """Time the whole run: what it spends between its stages (taking the lock, forking a
        worker, sorting out what was verified) gets a row of its own, and the total is the run's."""
        with _timed("total", self._ran):
            yield

    def _ran(self, stage: Stage) -> None:
        self.run = stage

    def call(self, name: str, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)``, timed as the stage ``name``."""
        with self(name):
            return function(*args, **kwargs)

    def rows(self) -> list[tuple[str, float, float, float]]:
        """(stage, wall, CPU, workers' CPU), then what the run spent between them (when the whole
        run was timed), then the total."""
        stages = self.stages
        summed = (sum(s.wall for s in stages), sum(s.cpu for s in stages), sum(s.workers for s in stages))
        rows = [(s.name, s.wall, s.cpu, s.workers) for s in stages]
        if self.run is None:
            return [*rows, ("total", *summed)]
        run = self.run
        wall, cpu, workers = (
            max(0.0, whole - part) for whole, part in zip((run.wall, run.cpu, run.workers), summed, strict=True)
        )
        return [*rows, ("between the stages", wall, cpu, workers), ("total", run.wall, run.cpu, run.workers)]


@contextmanager
def _timed(name: str, done: Callable[[Stage], object]) -> Iterator[None]:
    wall, cpu, workers = time.perf_counter(), time.process_time(), _workers()
    try:
        yield
    finally:
        done(Stage(name, time.perf_counter() - wall, time.process_time() - cpu, _workers() - workers))


if sys.platform != "win32":
    import resource

    def _workers() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

else:

    def _workers() -> float:
        return 0.0  # no accounting of ended children here: their CPU is left out
