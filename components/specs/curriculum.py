"""The curriculum spec: what `data_specs/curriculum/*.yaml` may say (REFERENCE.md section 6).

A curriculum is an ordered list of stages. Each stage names its data (dataset versions and mixture
weights per task family), which modules train and which stay frozen, sequence length and RoPE base,
optimizer and LR schedule, loss weights, budget, parallel sizes and the resources it runs on.

    curriculum = CurriculumSpec.load("data_specs/curriculum/tiny.yaml")
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from components.specs.loading import SpecError, load_yaml_model
from components.training.losses import (
    IMPLEMENTED_LOSSES,
    PRETRAINED_ELSEWHERE,
    PSEUDO_ASR,
    PSEUDO_AV,
    family_modules,
    runs_llm,
)

# Names a stage may train or freeze; each maps to a submodule of model.omni.OmniModel.
MODULES = ("llm", "vit", "vit_projector", "audio_encoder", "audio_encoder_projector", "audio_embeddings",
           "audio_heads", "codec")  # fmt: skip
# Trainable encoder modules -> the model attribute (encoder) that holds them: what parallel.encoders shards.
ENCODER_OF = {"vit": "vit", "vit_projector": "vit", "audio_encoder": "audio_encoder",
              "audio_encoder_projector": "audio_encoder"}  # fmt: skip
# Every loss name the recipe uses; the ones a stage may weight today are components.training.losses.
LOSSES = ("text", "audio", "audio_text", "first_audio_token", "vision", "ctc", "codec")
# Training precisions a stage may set (components.training.precision). fp16 is not offered: it needs loss
# scaling, which bf16's fp32-sized exponent makes unnecessary.
PRECISIONS = ("fp32", "bf16")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    datasets: dict[str, str] = Field(
        min_length=1, description="dataset name -> version (DVC md5 of its shards, or 'latest')"
    )
    mixture: dict[str, float] = Field(min_length=1, description="task family -> sampling weight; sums to 1")

    @field_validator("mixture")
    @classmethod
    def _weights_sum_to_one(cls, mixture: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in mixture.values()):
            raise ValueError(f"mixture weights must be >= 0, got {mixture}")
        total = sum(mixture.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"mixture weights must sum to 1, they sum to {total:g}: {mixture}")
        return mixture


class OptimizerSpec(_Strict):
    name: Literal["adamw"] = "adamw"
    lr: float = Field(gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)


class ScheduleSpec(_Strict):
    name: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)


class BudgetSpec(_Strict):
    steps: int | None = Field(None, gt=0)
    tokens: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetSpec:
        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one of steps or tokens")
        return self


class EncoderParallelSpec(_Strict):
    """How a stage's trained encoders are parallelised beside the LLM (REFERENCE.md section 7, modality-decoupled:
    components.training.encoder_sharding). They are FSDP2-sharded over their own mesh: every rank of a pipeline
    stage (tensor x context x data parallel = world / pipeline ranks), whatever the LLM's layout."""

    shard_size: int | None = Field(
        None,
        ge=1,
        description="ranks one encoder parameter is sharded over; the encoder mesh is then (mesh / shard_size "
        "replicas) x (shard_size shards), hybrid-sharded data parallel (HSDP). Must divide world / pipeline; "
        "None: plain FSDP over the whole mesh; 1: plain replication",
    )
    activation_checkpointing: bool = Field(
        True, description="recompute each ViT block / audio-encoder layer in backward (full activation recomputation)"
    )
    bridge_chunks: int = Field(
        1,
        ge=1,
        description="chunks the ModalityBridge moves encoder features and their gradients in: its peak staging "
        "memory is 1/bridge_chunks of the whole, results are bitwise the same",
    )

    def check_mesh(self, mesh_size: int) -> None:
        """ValueError naming the field and the fix when `shard_size` does not divide the encoder mesh."""
        if self.shard_size is not None and mesh_size % self.shard_size:
            divisors = [d for d in range(1, mesh_size + 1) if mesh_size % d == 0]
            raise ValueError(
                f"parallel.encoders.shard_size {self.shard_size} does not divide the encoder mesh of {mesh_size} "
                f"ranks (world / pipeline); use one of {divisors[:12]}{' ...' if len(divisors) > 12 else ''} or "
                "drop shard_size for plain FSDP"
            )


class ParallelSpec(_Strict):
    """Megatron's model-parallel sizes; data parallel is what the world size leaves (see `data_parallel`)."""

    tensor: int = Field(1, ge=1)
    pipeline: int = Field(1, ge=1)
    expert: int = Field(1, ge=1)
    context: int = Field(1, ge=1)
    encoders: EncoderParallelSpec = Field(
        EncoderParallelSpec(), description="how the trained encoders are sharded (only for a stage that trains one)"
    )

    def megatron_sizes(self):
        """The model-parallel sizes Megatron is initialised with (model.distributed.ParallelSizes); the
        encoders' block is the trainer's, not Megatron's."""
        from model.distributed import ParallelSizes  # lazy: specs load without torch

        return ParallelSizes(self.tensor, self.pipeline, self.expert, self.context)

    def data_parallel(self, world: int) -> int:
        """The data-parallel size for `world` processes; ValueError when the plan does not fit.

        Megatron-Core (parallel_state.initialize_model_parallel) needs world = TP x PP x CP x DP, and folds
        expert parallel into the TP x CP x DP ranks of a pipeline stage with the expert tensor-parallel size
        defaulting to TP: world must also be a multiple of TP x EP x PP.
        """
        model_parallel = self.tensor * self.pipeline * self.context
        if world % model_parallel:
            raise ValueError(
                f"tensor x pipeline x context = {self.tensor} x {self.pipeline} x {self.context} = {model_parallel} "
                f"does not divide the {world} GPUs; change parallel or resources.nodes / gpus_per_node"
            )
        expert_span = self.tensor * self.expert * self.pipeline
        if world % expert_span:
            raise ValueError(
                f"expert parallel size {self.expert} x tensor {self.tensor} does not divide the "
                f"{world // self.pipeline} GPUs of a pipeline stage (Megatron places experts inside "
                f"tensor x context x data parallel); change parallel.expert or the GPU count"
            )
        self.encoders.check_mesh(world // self.pipeline)
        return world // model_parallel


# The counts KFP's set_accelerator_limit and the GPU node shapes accept (ENVIRONMENT.md, KFP accelerators).
GPUS_PER_NODE_ALLOWED = (0, 1, 2, 4, 8, 16)
# A Kubernetes label value: the accelerator and the node pool are node-selector values.
_LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"


class ResourcesSpec(_Strict):
    accelerator: str = Field(
        pattern=_LABEL_VALUE,
        description="GPU model, e.g. nvidia-h100-80gb: the omnistage.io/accelerator label of its node pool; "
        "'cpu' for stages without GPUs",
    )
    gpus_per_node: int = Field(ge=0, description=f"one of {GPUS_PER_NODE_ALLOWED}")
    nodes: int = Field(1, ge=1, description="> 1: the stage runs as a Kubeflow Trainer TrainJob of this many nodes")
    processes_per_node: int | None = Field(
        None,
        ge=1,
        description="training processes per node (torchrun ranks, data parallel); default one per GPU, or 1 on a "
        "CPU stage. More than one process in all: a TrainJob on a cluster, torchrun with gloo under kfp.local",
    )
    node_pool: str = Field(pattern=_LABEL_VALUE, description="node pool label value the stage's pods select")
    cpu: str = "8"
    memory: str = "64Gi"
    max_duration_hours: float | None = Field(
        None,
        gt=0,
        description="wall-clock cap on a cluster: the TrainJob's activeDeadlineSeconds (required when nodes > 1), "
        "the GPU task pod's deadline otherwise",
    )

    def processes(self) -> int:
        """Processes per node: `processes_per_node`, else one per GPU, else 1."""
        return self.processes_per_node or self.gpus_per_node or 1

    def world_size(self) -> int:
        """Processes in the whole stage (nodes x processes per node)."""
        return self.nodes * self.processes()


class CheckpointStorageSpec(_Strict):
    """Where stage checkpoints live on a cluster. Without it they are KFP output artifacts in the pipeline
    root (an object store: S3/GCS/MinIO); with a PVC they are written to a shared volume instead, which
    suits multi-terabyte full-size checkpoints that every node of the next stage reads."""

    pvc: str = Field(description="name of an existing ReadWriteMany PersistentVolumeClaim")
    mount_path: str = Field("/mnt/checkpoints", pattern=r"^/")


# Where stage steps read the checkpoint prefix from (components.pipelines.stage_entry).
CHECKPOINT_URI_ENV = "OMNISTAGE_CHECKPOINT_URI"
# Kueue admits a 64-node job when the pool has room for all of it; hours are normal, days mean a stuck queue.
ADMISSION_TIMEOUT_S = 6 * 3600.0


class ClusterSpec(_Strict):
    """How the curriculum's stages are placed on a Kubernetes cluster (ignored by kfp.local)."""

    queue: str | None = Field(
        None,
        pattern=_LABEL_VALUE,
        description="Kueue LocalQueue that admits the stages' TrainJobs (label kueue.x-k8s.io/queue-name); "
        "without it TrainJobs start unqueued",
    )
    launcher_pool: str = Field(
        "cpu-data",
        pattern=_LABEL_VALUE,
        description="node pool (omnistage.io/pool) of the small CPU task that launches a multi-node stage",
    )
    network: Literal["none", "efa"] = Field(
        "none",
        description="inter-node fabric of multi-node stages (components/pipelines/network.py): none (NCCL over "
        "the pod network) or efa (AWS EFA: vpc.amazonaws.com/efa, hugepages and libfabric/NCCL env on every "
        "node); GKE's GPUDirect settings are documented in infra/README.md",
    )
    checkpoint_uri: str | None = Field(
        None,
        description="s3:// or gs:// prefix stage checkpoints are published under: the compiled pipeline sets it "
        "as OMNISTAGE_CHECKPOINT_URI on every stage, launcher and evaluate task; unset: the pods' own environment",
    )
    dvc_remote: str | None = Field(
        None,
        description="s3:// or gs:// DVC remote NAME@VERSION datasets are restored from (OMNISTAGE_DVC_REMOTE on the "
        "same tasks and every TrainJob node); unset: the pods' own environment, else the repository's remote",
    )
    s3_endpoint: str | None = Field(
        None,
        description="http(s):// endpoint of an S3-compatible store that is not AWS (MinIO, Ceph): AWS_ENDPOINT_URL on "
        "the same tasks and every TrainJob node; unset: the pods' own environment, else AWS itself",
    )
    admission_timeout_s: float = Field(
        ADMISSION_TIMEOUT_S,
        gt=0,
        description="how long a launcher waits for Kueue to admit (unsuspend) its TrainJob before it deletes the job "
        "and fails the task; each retry of the task waits again",
    )
    launcher_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="KFP retries of a multi-node stage's launcher task (a retry re-attaches to the job it created)",
    )

    @field_validator("checkpoint_uri", "dvc_remote")
    @classmethod
    def _bucket_uri(cls, uri: str | None, info) -> str | None:
        from components.orchestration.object_store import OBJECT_STORE_SCHEMES, is_object_store_uri

        if uri is not None and not is_object_store_uri(uri):
            schemes = " or ".join(f"{s}://bucket/prefix" for s in OBJECT_STORE_SCHEMES)
            volume = " (a shared volume is checkpoint_storage)" if info.field_name == "checkpoint_uri" else ""
            raise ValueError(f"cluster.{info.field_name} must be an object-store URI, {schemes}{volume}")
        return uri.rstrip("/") if uri else uri

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint_url(cls, url: str | None) -> str | None:
        from urllib.parse import urlsplit

        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("cluster.s3_endpoint must be an http:// or https:// URL with a host, e.g. "
                                 "https://minio.example:9000; leave it out for AWS S3")  # fmt: skip
        return url

    def object_storage_env(self) -> dict[str, str]:
        """The environment variables the curriculum's object-storage settings become on a cluster pod."""
        from components.orchestration.object_store import ENDPOINT_ENV
        from components.versioning.dataset_cache import REMOTE_ENV

        values = {CHECKPOINT_URI_ENV: self.checkpoint_uri, REMOTE_ENV: self.dvc_remote, ENDPOINT_ENV: self.s3_endpoint}
        return {name: value for name, value in values.items() if value}


class StageSpec(_Strict):
    name: str
    description: str = ""
    init_from: str | None = Field(None, description="previous stage whose checkpoint initialises this one")
    data: DataSpec
    train: list[str] = Field(min_length=1)
    freeze: list[str] = Field(default_factory=list)
    seq_length: int = Field(gt=0)
    rope_theta: float = Field(gt=0)
    micro_batch_size: int = Field(1, ge=1)
    global_batch_size: int = Field(1, ge=1)
    optimizer: OptimizerSpec
    schedule: ScheduleSpec = ScheduleSpec()
    loss_weights: dict[str, float] = Field(default_factory=lambda: {"text": 1.0})
    speech_input: Literal["encoder", "codec", "ctc_posteriors"] = Field(
        "encoder",
        description="how input speech reaches the LLM: 'codec' tokens in the 1-second layout (stages 1-4, needs an "
        "earlier stage that trains the codec), 'encoder' features from the audio encoder through its projector "
        "(stage 5 on), or 'ctc_posteriors': the audio encoder's CTC posteriors over the tokenizer, compressed per "
        "second to its best path's tokens (blank dropped), as a mix of the LLM's own token embeddings, no projector "
        "(model.omni.AUDIO_INPUTS, StreamingAudioEncoder.ctc_posteriors)",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="'bf16': Megatron mixed precision (bf16 LLM weights and activations, fp32 main weights, "
        "gradients, optimizer state and losses; encoders and codec stay fp32); 'fp32': everything fp32",
    )
    budget: BudgetSpec
    parallel: ParallelSpec = ParallelSpec()
    resources: ResourcesSpec

    @field_validator("precision", mode="before")
    @classmethod
    def _known_precision(cls, value: object, info: ValidationInfo) -> object:
        if value not in PRECISIONS:
            raise ValueError(f"stage '{info.data.get('name', '?')}': precision {value!r} is not supported; use one "
                             f"of {list(PRECISIONS)} (fp16 would need loss scaling, which is not built)")  # fmt: skip
        return value

    @field_validator("train", "freeze")
    @classmethod
    def _known_modules(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(MODULES))
        if unknown:
            raise ValueError(f"unknown module(s) {unknown}; known modules: {list(MODULES)}")
        return names

    @field_validator("loss_weights")
    @classmethod
    def _known_losses(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(LOSSES))
        if unknown:
            raise ValueError(f"unknown loss(es) {unknown}; known losses: {list(LOSSES)}")
        return weights

    @model_validator(mode="after")
    def _consistent(self) -> StageSpec:
        if "codec" in self.train and self.train != ["codec"]:
            raise ValueError(f"stage '{self.name}': the codec trains in a stage of its own (train: [codec]); "
                             f"split {self.train} into a codec stage and the rest")  # fmt: skip
        if self.train == ["codec"] and self.precision != "fp32":
            raise ValueError(f"stage '{self.name}': the codec stage trains in its own fp32 loop "
                             f"(components.training.codec_stage); precision {self.precision!r} is not built "
                             "there: set precision: fp32")  # fmt: skip
        for pseudo in (PSEUDO_ASR, PSEUDO_AV):
            if self.data.mixture.get(pseudo, 0) > 0 and self.speech_input != "ctc_posteriors":
                raise ValueError(
                    f"stage '{self.name}': data.mixture.{pseudo} feeds text as recognised tokens, which is how the "
                    f"LLM reads speech only with speech_input: ctc_posteriors (this stage: {self.speech_input}); "
                    f"set it or drop {pseudo} from the mixture"
                )
        both = sorted(set(self.train) & set(self.freeze))
        if both:
            raise ValueError(f"modules both trained and frozen: {both}")
        res = self.resources
        if res.gpus_per_node not in GPUS_PER_NODE_ALLOWED:
            raise ValueError(
                f"stage '{self.name}': resources.gpus_per_node is {res.gpus_per_node}; use one of "
                f"{list(GPUS_PER_NODE_ALLOWED)} (what KFP's accelerator limit and GPU node shapes accept)"
            )
        if res.gpus_per_node and res.accelerator == "cpu":
            raise ValueError(
                f"stage '{self.name}': resources.gpus_per_node is {res.gpus_per_node} but accelerator is 'cpu'; "
                "name the GPU model (e.g. nvidia-h100-80gb)"
            )
        if res.nodes > 1 and not res.gpus_per_node:
            raise ValueError(
                f"stage '{self.name}': resources.nodes is {res.nodes} without GPUs; multi-node stages are GPU "
                "TrainJobs, set gpus_per_node"
            )
        if res.gpus_per_node and res.processes_per_node not in (None, res.gpus_per_node):
            raise ValueError(
                f"stage '{self.name}': resources.processes_per_node is {res.processes_per_node} but gpus_per_node is "
                f"{res.gpus_per_node}; a GPU stage runs one process per GPU: drop processes_per_node"
            )
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError("global_batch_size must be a multiple of micro_batch_size")
        self._losses_producible()
        idle = sorted(set(self.train) - self.used_modules())
        if idle:
            raise ValueError(
                f"stage '{self.name}' trains {idle}, which neither its data.mixture "
                f"({sorted(f for f, w in self.data.mixture.items() if w > 0)}) nor its loss_weights "
                f"({sorted(self.loss_weights)}) reach: they would get no gradient and only be weight-decayed; "
                "remove them from train or add data that uses them"
            )
        # Compared with the defaults, not by fields set: a dumped and re-validated spec (KFP passes curricula
        # as JSON) carries the defaults explicitly and must stay valid.
        if self.parallel.encoders != EncoderParallelSpec() and not set(self.train) & set(ENCODER_OF):
            raise ValueError(
                f"stage '{self.name}' sets parallel.encoders but trains no encoder module ({list(ENCODER_OF)}); "
                "frozen encoders are not sharded: remove parallel.encoders"
            )
        world = res.world_size()
        if res.gpus_per_node or world > 1:  # a one-process CPU stage has no plan to check
            per_node = f"{res.gpus_per_node} GPUs" if res.gpus_per_node else f"{res.processes()} CPU processes"
            where = f"stage '{self.name}' ({res.nodes} node(s) x {per_node})"
            try:
                dp = self.parallel.data_parallel(world)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if self.global_batch_size % (self.micro_batch_size * dp):
                raise ValueError(
                    f"{where}: global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
                    f"{self.micro_batch_size} x data parallel {dp}; change the batch sizes or the processes"
                )
        return self

    def _losses_producible(self) -> None:
        """Refuse a loss weight the trainer does not implement or the stage's mixture cannot produce:
        either would be silently dropped from the objective."""
        implemented = sorted(IMPLEMENTED_LOSSES)
        families = sorted(f for f, w in self.data.mixture.items() if w > 0)
        for name in self.loss_weights:
            source = IMPLEMENTED_LOSSES.get(name)
            if source is None:
                raise ValueError(
                    f"stage '{self.name}': loss_weights.{name} is not implemented by the trainer (implemented losses: "
                    f"{implemented}); remove the weight or implement the loss (components/training/losses.py)"
                )
            if source.families is not None and not set(source.families) & set(families):
                raise ValueError(
                    f"stage '{self.name}': loss_weights.{name} needs {source.needs} from task families "
                    f"{list(source.families)}, but data.mixture has only {families}; add one of them to the mixture "
                    f"or remove the weight (implemented losses: {implemented})"
                )

    @property
    def audio_input(self) -> str:
        """How the model built for this stage maps audio-encoder output into the LLM (model.omni.AUDIO_INPUTS)."""
        return "ctc_posteriors" if self.speech_input == "ctc_posteriors" else "projector"

    def used_modules(self) -> set[str]:
        """Modules the stage's forward pass runs: the LLM and each family's path into it
        (components.training.losses.family_modules) unless only encoder losses are weighted, and what those run."""
        weighted = [IMPLEMENTED_LOSSES[name] for name, w in self.loss_weights.items() if w]
        used = {m for loss in weighted for m in loss.modules}
        if runs_llm(self.loss_weights):
            fed = [f for f, w in self.data.mixture.items() if w > 0]
            used |= {"llm"} | {m for f in fed for m in family_modules(f, self.speech_input)}
        return used


class CurriculumSpec(_Strict):
    name: str
    preset: Literal["tiny", "small", "longcat-flash-omni"]
    seed: int = 1234
    checkpoint_storage: CheckpointStorageSpec | None = None
    cluster: ClusterSpec = ClusterSpec()
    stages: list[StageSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _stage_chain(self) -> CurriculumSpec:
        seen: list[str] = []
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name '{stage.name}' is used twice")
            speech_codes = stage.speech_input == "codec" or "speech_response" in stage.data.mixture
            if speech_codes and not any("codec" in s.train for s in self.stages[: len(seen)]):
                raise ValueError(
                    f"stage '{stage.name}' turns speech into codec tokens (speech_input: codec or a speech_response "
                    "mixture) but no earlier stage trains the codec; add a stage with train: [codec] before it"
                )
            if stage.train == ["codec"] and stage.speech_input == "codec":
                raise ValueError(f"stage '{stage.name}' trains the codec on waveforms: set speech_input: encoder")
            if stage.init_from is not None and stage.init_from not in seen:
                raise ValueError(
                    f"stage '{stage.name}' initialises from '{stage.init_from}', which is not an earlier stage "
                    f"(earlier: {seen or 'none'})"
                )
            seen.append(stage.name)
        self._no_random_module_frozen()
        return self

    def _no_random_module_frozen(self) -> None:
        """Refuse a stage that freezes, or feeds data through without training, a module that no stage of its
        init_from chain trained: it would stay at its random initialisation and tell the LLM nothing."""
        trained_by: dict[str, dict[str, str]] = {}  # stage -> module -> the stage that trained it
        for stage in self.stages:
            earlier = dict(trained_by[stage.init_from]) if stage.init_from else {}
            trained_by[stage.name] = {**earlier, **{m: stage.name for m in stage.train}}
            chain = f"init_from chain ({stage.init_from})" if stage.init_from else "(it initialises from no stage)"
            untrained = [(m, "freezes") for m in stage.freeze if m not in earlier]
            untrained += [(m, "feeds data through") for m in sorted(stage.used_modules())
                          if m not in earlier and m not in stage.train]  # fmt: skip
            for module, how in untrained:
                if module in PRETRAINED_ELSEWHERE:
                    continue
                raise ValueError(
                    f"stage '{stage.name}' {how} '{module}', which no earlier stage of its {chain} trained: it would "
                    f"stay randomly initialised; add '{module}' to the train list of this stage or of an earlier one"
                    + (" (e.g. a CTC stage on the asr family: train [audio_encoder], loss_weights {ctc: 1.0})"
                       if module == "audio_encoder" else "")
                )  # fmt: skip

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ValueError(f"curriculum '{self.name}' has no stage '{name}'; stages: {[s.name for s in self.stages]}")

    @classmethod
    def load(cls, path: Path | str) -> CurriculumSpec:
        return load_yaml_model(path, cls)


def check_dataset_versions(curriculum: CurriculumSpec, available: dict[str, set[str]], where: str) -> None:
    """Fail when a stage names a dataset, or a version of it, that is not available.

    `available`: dataset name -> known versions (from stats.json / DVC); 'latest' matches any version.
    """
    problems = []
    for stage in curriculum.stages:
        for dataset, version in stage.data.datasets.items():
            if dataset not in available:
                problems.append(
                    f"stage '{stage.name}': dataset '{dataset}' is not ingested (known: {sorted(available)})"
                )
            elif version != "latest" and version not in available[dataset]:
                problems.append(
                    f"stage '{stage.name}': dataset '{dataset}' has no version '{version}' "
                    f"(known: {sorted(available[dataset])}); ingest it or use 'latest'"
                )
    if problems:
        raise SpecError(f"{where}: " + "; ".join(problems))
