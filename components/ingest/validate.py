"""Validate the probe manifest with a Great Expectations suite and render its Data Docs.

The suite lives in `data_specs/expectations/<name>.yaml`. Row-level checks decide which inputs are
quarantined (the failing expectation is the reason); table-level checks that fail stop the run, since
they mean the batch as a whole is wrong. Data Docs HTML is written under `<out>/validation/`.

Arguments written `$limits.NAME` come from the dataset spec. A spec field left unset (None) switches its
expectation off, which is how opt-in checks such as the codec allow-lists stay in the suite.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from components.specs.dataset import DatasetSpec
from components.specs.loading import SpecError, load_yaml_model

EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "data_specs" / "expectations"
log = logging.getLogger(__name__)


class ExpectationEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="A Great Expectations expectation type, e.g. expect_column_values_to_be_between")
    kwargs: dict
    per_row: bool = True


class ExpectationSuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    expectations: list[ExpectationEntry] = Field(min_length=1)


@dataclass
class ValidationOutcome:
    row_failures: dict[str, list[str]]  # sha256 -> reasons
    table_failures: list[str]
    data_docs: Path | None
    num_expectations: int


def load_suite(name: str, expectations_dir: Path = EXPECTATIONS_DIR) -> ExpectationSuiteSpec:
    return load_yaml_model(expectations_dir / f"{name}.yaml", ExpectationSuiteSpec)


def _is_reference(value) -> bool:
    return isinstance(value, str) and value.startswith("$")


def _resolve(value, spec: DatasetSpec, where: str):
    if _is_reference(value):
        node = spec
        for part in value[1:].split("."):
            if not hasattr(node, part):
                raise SpecError(f"{where}: '{value}' does not name a dataset-spec field (e.g. $limits.max_duration_s)")
            node = getattr(node, part)
        return list(node) if isinstance(node, (list, tuple)) else node
    return value


def _class_name(expectation_type: str) -> str:
    return "".join(part.capitalize() for part in expectation_type.split("_"))


def _defer_module(name: str) -> None:
    """Import `name` lazily: its body runs on the first attribute access instead of at `import` time.

    Great Expectations imports `scipy.stats` at module top for its two distribution expectations (KL
    divergence, KS test); executing it is ~40% of GX's import (about 2 CPU-s here), paid on every ingestion
    though our suites rarely use them. A suite that does use one loads it on first use, unchanged."""
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    module_spec = importlib.util.find_spec(name)
    if module_spec is None or module_spec.loader is None:
        return
    loader = importlib.util.LazyLoader(module_spec.loader)
    module_spec.loader = loader
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    loader.exec_module(module)
    if parent:
        setattr(sys.modules[parent], child, module)


def validate_manifest(frame: pd.DataFrame, spec: DatasetSpec, docs_dir: Path) -> ValidationOutcome:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    _defer_module("scipy.stats")
    import great_expectations as gx  # heavy (3 s): imported only when validation runs

    suite_spec = load_suite(spec.expectation_suite)
    docs_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    batch = context.data_sources.add_or_update_pandas("manifest").add_dataframe_asset("probe")
    batch_definition = batch.add_batch_definition_whole_dataframe("all_rows")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=suite_spec.name))
    per_row: dict[int, bool] = {}
    spec_values: dict[int, str] = {}  # index -> the spec values it checks against, for quarantine reasons
    for index, entry in enumerate(suite_spec.expectations):
        where = f"{EXPECTATIONS_DIR / (suite_spec.name + '.yaml')}: expectations[{index}]"
        cls = getattr(gx.expectations, _class_name(entry.type), None)
        if cls is None:
            raise SpecError(f"{where}: unknown expectation type '{entry.type}'")
        kwargs = {k: _resolve(v, spec, where) for k, v in entry.kwargs.items()}
        references = {k: v for k, v in entry.kwargs.items() if _is_reference(v)}
        if any(kwargs[k] is None for k in references):
            continue  # the spec leaves this check unset: not applied
        suite.add_expectation(cls(**kwargs, meta={"index": index}))
        per_row[index] = entry.per_row
        spec_values[index] = ", ".join(f"{k}={kwargs[k]!r} from the spec's {ref[1:]}" for k, ref in references.items())
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{spec.name}-manifest", data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{spec.name}-ingest",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["sha256"]},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame.reset_index(drop=True)})
    row_failures: dict[str, list[str]] = {}
    table_failures: list[str] = []
    for run in result.run_results.values():
        for check in run.results:
            if check.success:
                continue
            config = check.expectation_config
            column = config.kwargs.get("column")
            described = f"{config.type}({column})"
            index = (config.meta or {}).get("index")
            if not per_row.get(index, True):
                table_failures.append(f"{described}: {check.result.get('partial_unexpected_list', [])[:5]}")
                continue
            checked_against = f" ({spec_values[index]})" if spec_values.get(index) else ""
            for row in check.result.get("unexpected_index_list") or []:
                row_failures.setdefault(row["sha256"], []).append(
                    f"expectation {described} failed: value {row.get(column)!r}{checked_against}"
                )
    docs = docs_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return ValidationOutcome(row_failures, table_failures, docs if docs.exists() else None, len(per_row))
