"""Progress for long work: a rich bar on a terminal, periodic log lines elsewhere (Airflow, CI, KFP logs)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("omnistage")


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "items") -> Iterator[T]:
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    if sys.stderr.isatty():
        from rich.progress import track as rich_track

        yield from rich_track(items, description=description, total=total, transient=False)
        return
    started, last = time.monotonic(), 0.0
    done = 0
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= 10 or done == total:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s %s (%.0f s)", description, done, of, unit, now - started)
    if done == 0:
        log.info("%s: nothing to do", description)
