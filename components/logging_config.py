"""How omnistage processes log: our own messages at INFO, third-party chatter out of the way.

Importing `components` calls `quiet_backend_notices()`, so every omnistage process (the CLI, a KFP stage
task, a torchrun worker) gets it before megatron-core is imported:

- megatron-core announces at import time, with `warnings.warn`, every optional backend it falls back from
  (Transformer Engine, Apex: about ten lines on a CPU machine, the same on every command), and a few
  libraries warn about their own internals (`_BACKEND_NOTICES`). Those notices say nothing about the
  user's data or config, so each is logged once, at DEBUG (`omnistage -v` shows them). Every other
  warning is shown as usual.
- megatron's INFO-level import notices ("multistorageclient is available", "Megatron-FSDP without
  Transformer Engine") go to loggers that are kept at WARNING.

`configure_logging(verbose)` is what the CLI calls: INFO for omnistage's loggers, WARNING for the rest.
"""

from __future__ import annotations

import logging
import re
import warnings

# Loggers of omnistage itself: `components.*` / `model.*` module loggers and the progress logger.
OWN_LOGGERS = ("components", "model", "omnistage")
# Third-party loggers that speak at INFO about their own setup on every process start.
CHATTY_LOGGERS = ("megatron", "megatron_fsdp", "great_expectations", "urllib3", "matplotlib", "PIL", "fsspec")
# Notices third-party code gives about its own internals, on every process, whatever the user's data or
# config: each is logged once at DEBUG instead of shown. Everything else is shown as usual.
_BACKEND_NOTICES = re.compile("|".join([
    # megatron-core 0.16.1 falling back from optional GPU backends (models/backends.py, optimizer/*.py,
    # distributed/fsdp/.../mixed_precision.py): expected on CPU machines.
    r"Transformer Engine and Apex are not installed", r"Apex is not installed",
    # megatron-core's TransformerConfig warns about its own default cuda_graph_scope.
    r"full scope is deprecated",
    # megatron's dist_checkpointing calls torch.distributed.checkpoint APIs that torch 2.13 deprecates.
    r"`load_state_dict` is deprecated", r"deprecating ShardedTensor",
    # MLflow 3.17 registers LocalArtifactDatasetSource twice and then warns that a path is ambiguous.
    r"can be interpreted in multiple ways: LocalArtifactDatasetSource, LocalArtifactDatasetSource",
]))  # fmt: skip

log = logging.getLogger("omnistage.backends")
_original_showwarning = warnings.showwarning
_seen: set[str] = set()


def _showwarning(message, category, filename, lineno, file=None, line=None):
    text = str(message)
    if _BACKEND_NOTICES.search(text):
        if text not in _seen:
            _seen.add(text)
            log.debug("%s (%s:%s)", text, filename, lineno)
        return
    _original_showwarning(message, category, filename, lineno, file, line)


def quiet_backend_notices() -> None:
    """Route backend fallback notices to one DEBUG line each; keep chatty third-party loggers at WARNING."""
    warnings.showwarning = _showwarning
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(verbose: bool = False) -> None:
    """Timestamped lines on stderr; omnistage at INFO (DEBUG with verbose), other libraries at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
