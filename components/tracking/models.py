"""Model references: a checkpoint folder or object-store URI, `runs:/RUN/PATH`, `models:/NAME/VERSION` or
`models:/NAME@ALIAS`, resolved to a local checkpoint folder plus what the registry knows about it.

A version whose `source` is a checkpoint published to object storage (components.training.checkpoint_store)
is downloaded into the checkpoint cache and verified against its manifest; any other source (the run's
artifacts) is downloaded through MLflow as before."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.object_storage import is_remote


@dataclass
class ResolvedModel:
    uri: str
    checkpoint: Path  # local folder holding meta.json
    lineage_target: str  # what components.tracking.lineage.lineage_back walks from
    name: str | None = None
    version: str | None = None
    run_id: str | None = None


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """models:/NAME/VERSION -> (NAME, VERSION, None); models:/NAME@ALIAS -> (NAME, None, ALIAS)."""
    body = uri[len("models:/") :]
    if "@" in body:
        name, _, alias = body.partition("@")
        return name, None, alias
    name, _, version = body.partition("/")
    if not name or not version:
        raise ValueError(f"{uri!r}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    return name, version, None


def get_model_version(client, uri: str):
    """The registry's ModelVersion for models:/NAME/VERSION or models:/NAME@ALIAS; a ValueError that lists
    what the registry does hold when the reference names nothing."""
    name, version, alias = parse_models_uri(uri)
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except Exception:  # MlflowException RESOURCE_DOES_NOT_EXIST, or an alias never set
        pass
    try:
        model = client.get_registered_model(name)
    except Exception:
        names = sorted(m.name for m in client.search_registered_models())
        raise ValueError(f"{uri}: no registered model '{name}' (registered: {', '.join(names) or 'none'}); "
                         "`omnistage status --name NAME` shows a model's champion") from None  # fmt: skip
    aliases = ", ".join(f"@{a}" for a in sorted(model.aliases)) or "none"
    versions = ", ".join(sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int))
    wanted = f"alias @{alias}" if alias else f"version {version}"
    raise ValueError(f"{uri}: model '{name}' has no {wanted} (versions: {versions or 'none'}; aliases: {aliases})")


def resolve_model(uri: str, tracking_uri: str) -> ResolvedModel:
    import mlflow

    from components.tracking.experiments import mlflow_client
    from components.training.checkpoint_layout import checkpoint_dir
    from components.training.checkpoint_store import is_published, local_checkpoint

    client = mlflow_client(tracking_uri)
    if uri.startswith("models:/"):
        mv = get_model_version(client, uri)
        name = mv.name
        if is_published(mv.source):
            local = local_checkpoint(mv.source)
        else:
            local = _followed(Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source)))
        version = str(mv.version)
        return ResolvedModel(uri, checkpoint_dir(local), f"models:/{name}/{version}", name, version, mv.run_id)
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/") :].split("/", 1)[0]
        published = client.get_run(run_id).data.tags.get("omnistage.checkpoint_uri")
        if published:
            local = local_checkpoint(published)
        else:
            local = _followed(Path(mlflow.artifacts.download_artifacts(artifact_uri=uri)))
        return ResolvedModel(uri, checkpoint_dir(local), _checkpoint_tag(client, run_id), run_id=run_id)
    if is_remote(uri):
        return ResolvedModel(uri, checkpoint_dir(local_checkpoint(uri)), uri.rstrip("/"))
    folder = checkpoint_dir(Path(uri))
    return ResolvedModel(uri, folder, str(folder.resolve()))


def _followed(artifact: Path) -> Path:
    """A downloaded checkpoint artifact, or the folder its pointer file names (a checkpoint MLflow references
    rather than copies: components.tracking.mlflow_stage)."""
    from components.tracking.mlflow_stage import CHECKPOINT_POINTER

    pointer = artifact / CHECKPOINT_POINTER
    if not pointer.is_file():
        return artifact
    target = pointer.read_text().strip()
    if not is_remote(target) and not Path(target).is_dir():
        raise FileNotFoundError(f"the model's checkpoint is referenced, not copied, and {target} is not on this "
                                "machine: run where the checkpoint volume is mounted")  # fmt: skip
    from components.training.checkpoint_store import local_checkpoint

    return local_checkpoint(target)


def _checkpoint_tag(client, run_id: str) -> str:
    tag = client.get_run(run_id).data.tags.get("omnistage.checkpoint")
    if not tag:
        raise ValueError(f"run {run_id} is not a tracked curriculum stage (no omnistage.checkpoint tag)")
    return tag
