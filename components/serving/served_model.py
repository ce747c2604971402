"""The model a server answers with: a registry version (models:/NAME@ALIAS or models:/NAME/VERSION)
resolved to its checkpoint, loaded once and shared by every session under one lock."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from components.evaluation.scoring import LoadedModel
from components.serving.protocol import SAMPLE_RATE, Limits

log = logging.getLogger(__name__)

SERVED_AT_TAG = "omnistage.serving.endpoint"  # on the model version: where it was last served


@dataclass
class ServedModel:
    loaded: LoadedModel
    uri: str
    name: str | None = None
    version: str | None = None
    limits: Limits = field(default_factory=Limits)
    # One forward at a time: sessions share the weights, and the model keeps the last hidden states on itself
    # (OmniModel._hidden); the 2-core reference machine has no cores to spare for parallel forwards anyway.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def max_tokens(self) -> int:
        """A session's context: the limit given, else the sequence length the model was trained at."""
        return self.limits.max_tokens or self.loaded.preset.llm.seq_length

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def metadata(self) -> dict:
        meta = self.loaded.meta
        return {"model": self.uri, "name": self.name, "version": self.version, "preset": meta.get("preset"),
                "stage": meta.get("stage"), "audio_input": meta.get("audio_input"),
                "limits": self.limits.as_dict() | {"max_tokens": self.max_tokens}}  # fmt: skip


def load_served_model(model_uri: str, tracking_uri: str, limits: Limits | None = None) -> ServedModel:
    """A registry version, not a laptop path: what was promoted is what answers. Loaded and warmed up
    (components.serving.session.warm_up), so the first conversation is as fast as the next."""
    from components.evaluation.scoring import load_checkpoint_model
    from components.tracking.models import resolve_model

    if not model_uri.startswith("models:/"):
        raise ValueError(f"serve a registered model version (models:/NAME@champion or models:/NAME/VERSION), got "
                         f"{model_uri!r}: `omnistage promote` registers and promotes a checkpoint")  # fmt: skip
    resolved = resolve_model(model_uri, tracking_uri)
    loaded = load_checkpoint_model(resolved.checkpoint)
    if loaded.meta.get("audio_input", "projector") not in ("projector", "ctc_posteriors"):
        raise ValueError(f"{model_uri}: checkpoint reads speech as {loaded.meta['audio_input']!r}; the server "
                         "feeds speech through the audio encoder")  # fmt: skip
    served = ServedModel(loaded, model_uri, resolved.name, resolved.version, limits or Limits())
    from components.serving.session import warm_up  # the session module runs the model: imported when one is

    log.info("%s warmed up in %.0f ms", model_uri, warm_up(served))
    return served


def record_endpoint(served: ServedModel, tracking_uri: str, endpoint: str) -> None:
    """Tag the version with where it is served (the registry page shows it)."""
    from components.tracking.experiments import mlflow_client

    if served.name and served.version:
        mlflow_client(tracking_uri).set_model_version_tag(served.name, served.version, SERVED_AT_TAG, endpoint)
