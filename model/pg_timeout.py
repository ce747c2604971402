"""The process group's collective timeout, read from the environment (torch-free: the CLI imports it).

`init_parallel` (model/distributed.py) passes it to `init_process_group`; `omnistage train --pg-timeout`
sets the variable for every rank torchrun starts.
"""

from __future__ import annotations

import os
from datetime import timedelta

# How long a collective (all-reduce, barrier, a checkpoint's save) may wait for the other ranks before it
# raises instead of hanging. A rank that dies closes its gloo connections, so its peers fail at once and
# torchrun stops the job; this bound is for a rank that hangs or a node that drops off the network.
# Megatron-LM's default (--distributed-timeout-minutes 10); raise it when one checkpoint save takes longer.
PG_TIMEOUT_ENV = "OMNISTAGE_PG_TIMEOUT_S"
DEFAULT_PG_TIMEOUT_S = 600.0


def process_group_timeout() -> timedelta:
    """The collective timeout from $OMNISTAGE_PG_TIMEOUT_S (seconds), else 600 s."""
    raw = os.environ.get(PG_TIMEOUT_ENV)
    if raw is None:
        return timedelta(seconds=DEFAULT_PG_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"${PG_TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0 (e.g. 600), the longest "
                         "a collective may wait for the other ranks")  # fmt: skip
    return timedelta(seconds=seconds)
