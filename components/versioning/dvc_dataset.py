"""Version an ingested dataset with DVC.

Each dataset spec gets a stage `ingest-<name>` in the repository's `dvc.yaml`, whose deps are the spec, the
expectation suite, the ingestion code and the raw sources, and whose outs are the shard folder, the
manifest and the quarantine list. Two entry points share it:

- `build_dataset`: `dvc repro` the stage (runs `omnistage ingest` only when a dep changed, otherwise says
  it skipped), push to the remote, stamp the version into `stats.json`. What `make run` uses.
- `commit_dataset`: the shards were written by earlier pipeline tasks (the Airflow DAG); `dvc commit`
  records them as the stage's outputs, then push and stamp.

The dataset version id is DVC's md5 of the shard folder. The git commit of the code is recorded with it.

The remote may be a local folder or object storage (`s3://`, `gs://`); an S3 remote gets its
`endpointurl` from the project's endpoint setting (`AWS_ENDPOINT_URL`, components/object_storage.py),
written to `.dvc/config.local` because it belongs to the machine, not to the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from components.ingest.pipeline import IngestPaths
from components.object_storage import protocol_of, s3_endpoint_url
from components.specs.dataset import DatasetSpec

CODE_DEPS = ["components/ingest", "components/specs/dataset.py"]


@dataclass
class DatasetVersion:
    dataset: str
    version: str  # DVC md5 of the shard folder, e.g. "3f2a...c1.dir"
    manifest_md5: str
    git_commit: str | None
    git_dirty: bool
    stage: str
    reproduced: bool  # False when DVC found nothing changed and skipped ingestion
    remote: str | None

    def as_dict(self) -> dict:
        return asdict(self)


class DvcError(RuntimeError):
    pass


def _env(workers: int | None = None) -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    if workers:
        env["OMNISTAGE_WORKERS"] = str(workers)
    # `dvc repro` runs the stage's `omnistage ...` command: make this interpreter's scripts come first.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_dvc(repo: Path, *args: str, workers: int | None = None, stream: bool = False) -> str:
    """`dvc ARGS` in `repo`; with `stream` its output (e.g. ingestion progress under `dvc repro`) goes to
    this process's stderr as it comes instead of being captured."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=_env(workers), text=True,
        stdout=sys.stderr if stream else subprocess.PIPE, stderr=None if stream else subprocess.PIPE,
    )  # fmt: skip
    if proc.returncode != 0:
        output = "see the output above" if stream else (proc.stdout + proc.stderr).strip()[-2000:]
        raise DvcError(f"`dvc {' '.join(args)}` failed in {repo}:\n{output}")
    return proc.stdout or ""


def ensure_dvc_repo(repo: Path, remote_url: str | None) -> None:
    """`dvc init` where needed (without git when the folder is not a git work tree) and set the default remote."""
    if not (repo / ".dvc").is_dir():
        no_scm = [] if (repo / ".git").exists() else ["--no-scm"]
        run_dvc(repo, "init", "-q", *no_scm)
        run_dvc(repo, "config", "cache.type", "reflink,hardlink,copy")
    if remote_url:
        run_dvc(repo, "remote", "add", "-f", "-d", "default", remote_url)
    configure_s3_endpoints(repo)


def remotes(repo: Path) -> dict[str, str]:
    """The repository's DVC remotes: name -> URL (`dvc remote list` prints `NAME URL [(default)]`)."""
    rows = [line.split() for line in run_dvc(repo, "remote", "list").splitlines()]
    return {row[0]: row[1] for row in rows if len(row) >= 2}


def configure_s3_endpoints(repo: Path) -> None:
    """Point every S3 remote of `repo` at the project's S3 endpoint, when one is set (not AWS itself)."""
    endpoint = s3_endpoint_url()
    if not endpoint:
        return
    for name, url in remotes(repo).items():
        if protocol_of(url) == "s3":
            run_dvc(repo, "remote", "modify", "--local", name, "endpointurl", endpoint)


def stage_name(spec: DatasetSpec) -> str:
    return f"ingest-{spec.name}"


def default_remote_url(repo: Path) -> str:
    """The URL of the repository's first DVC remote (a relative local remote resolved as DVC does:
    against `.dvc/`)."""
    urls = remotes(Path(repo)) if (Path(repo) / ".dvc").is_dir() else {}
    if not urls:
        raise DvcError(f"{repo} has no DVC remote: pass --remote URL (the remote the version was pushed to)")
    url = next(iter(urls.values()))
    return url if "://" in url or os.path.isabs(url) else str((Path(repo) / ".dvc" / url).resolve())


def stage_shards_folder(repo: Path, dataset: str) -> Path:
    """The shard folder that stage `ingest-DATASET` of the repository's dvc.yaml outputs."""
    dvc_yaml = Path(repo) / "dvc.yaml"
    stage = (yaml.safe_load(dvc_yaml.read_text()) if dvc_yaml.is_file() else {}).get("stages", {})
    outs = stage.get(f"ingest-{dataset}", {}).get("outs", [])
    shards = [o for o in outs if isinstance(o, str) and o.endswith("/shards")]
    if not shards:
        raise DvcError(f"{dvc_yaml} has no stage ingest-{dataset} with a shards output: pass --out FOLDER")
    return Path(repo) / shards[0]


def _relative(repo: Path, path: Path | str, what: str) -> str:
    full = (repo / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    try:
        return full.relative_to(repo.resolve()).as_posix()
    except ValueError:
        raise DvcError(
            f"{what} {full} lies outside the DVC repository {repo}: DVC can only track paths inside it"
        ) from None


def ensure_stage(repo: Path, spec: DatasetSpec, spec_path: Path, out: Path) -> str:
    """Add or update the dataset's stage in `dvc.yaml`; returns the stage name."""
    spec_rel = _relative(repo, spec_path, "spec")
    out_rel = _relative(repo, out, "output folder")
    deps = [spec_rel, f"data_specs/expectations/{spec.expectation_suite}.yaml", *CODE_DEPS]
    deps += [_relative(repo, s.location, f"source '{s.name}'") for s in spec.sources if "://" not in s.location]
    stage = {
        # Workers change speed, not bytes: they reach the command through OMNISTAGE_WORKERS, so a
        # different worker count never invalidates the stage.
        "cmd": f"omnistage ingest --spec {spec_rel} --out {out_rel}",
        "deps": [d for d in deps if (repo / d).exists()],
        # stats.json is deliberately not an output: the version is stamped into it after DVC hashed the outs.
        "outs": [f"{out_rel}/shards", f"{out_rel}/manifest.parquet", f"{out_rel}/quarantine.jsonl"],
    }
    dvc_yaml = repo / "dvc.yaml"
    doc = yaml.safe_load(dvc_yaml.read_text()) if dvc_yaml.exists() else {}
    doc = doc or {}
    name = stage_name(spec)
    if doc.get("stages", {}).get(name) != stage:
        doc.setdefault("stages", {})[name] = stage
        dvc_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    return name


def _lock_md5(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for out in lock["stages"][stage]["outs"]:
        if out["path"] == path:
            return out["md5"]
    raise DvcError(f"dvc.lock has no output {path} for stage {stage}")


def _git_state(repo: Path) -> tuple[str | None, bool]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode != 0:
        return None, False
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
    )
    return head.stdout.strip(), bool(dirty.stdout.strip())


def _finish(repo: Path, spec: DatasetSpec, out: Path, stage: str, reproduced: bool, push: bool) -> DatasetVersion:
    out_rel = _relative(repo, out, "output folder")
    remote = None
    if push:
        urls = remotes(repo)
        if urls:
            run_dvc(repo, "push", stage)
            remote = next(iter(urls.values()))
    commit, dirty = _git_state(repo)
    version = DatasetVersion(
        dataset=spec.name,
        version=_lock_md5(repo, stage, f"{out_rel}/shards"),
        manifest_md5=_lock_md5(repo, stage, f"{out_rel}/manifest.parquet"),
        git_commit=commit,
        git_dirty=dirty,
        stage=stage,
        reproduced=reproduced,
        remote=remote,
    )
    stats_path = IngestPaths(Path(repo / out_rel)).stats
    stats = json.loads(stats_path.read_text())
    stats["version"] = {k: v for k, v in version.as_dict().items() if k != "reproduced"}
    stats_path.write_text(json.dumps(stats, indent=2, sort_keys=True))
    return version


def _prepare_stage(repo: Path, spec: DatasetSpec, spec_path: Path, out: Path, remote_url: str | None):
    """The DVC repository (initialised) and the dataset's stage (written into dvc.yaml)."""
    repo = Path(repo).resolve()
    ensure_dvc_repo(repo, remote_url)
    return repo, ensure_stage(repo, spec, spec_path, out)


def build_dataset(
    repo: Path,
    spec: DatasetSpec,
    spec_path: Path,
    out: Path,
    workers: int = 1,
    remote_url: str | None = None,
    push: bool = True,
) -> DatasetVersion:
    repo, stage = _prepare_stage(repo, spec, spec_path, out, remote_url)
    status = json.loads(run_dvc(repo, "status", stage, "--json") or "{}")
    # stats.json, the card and the Data Docs are not DVC outputs (stats.json is stamped after the stage
    # runs); when they are gone (e.g. `make clean`) while DVC can restore the shards, ingest again.
    incomplete = not IngestPaths(Path(out) if Path(out).is_absolute() else repo / out).stats.is_file()
    reproduced = bool(status) or incomplete or not (repo / "dvc.lock").exists()
    if reproduced:
        run_dvc(repo, "repro", *(["--force"] if incomplete else []), stage, workers=workers, stream=True)
    return _finish(repo, spec, out, stage, reproduced, push)


def commit_dataset(
    repo: Path,
    spec: DatasetSpec,
    spec_path: Path,
    out: Path,
    remote_url: str | None = None,
    push: bool = True,
) -> DatasetVersion:
    repo, stage = _prepare_stage(repo, spec, spec_path, out, remote_url)
    run_dvc(repo, "commit", "-f", stage)
    return _finish(repo, spec, out, stage, True, push)


def read_version(out: Path) -> dict | None:
    """The version stamped into an ingested dataset's stats.json, if it was versioned."""
    stats = IngestPaths(Path(out)).stats
    return json.loads(stats.read_text()).get("version") if stats.is_file() else None
