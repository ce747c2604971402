"""`omnistage bench train` end to end on the tiny dataset (numbers are reported by benchmarks/, not asserted)."""

import pytest

from components.bench.train_throughput import run_benchmark
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_train_benchmark_reports_every_key(tiny_dataset):
    results = run_benchmark(tiny_dataset, tiny_dataset / "tokenizer.json",
                            REPO_ROOT / "data_specs/curriculum/tiny.yaml", "tiny", 1024, steps=1)  # fmt: skip
    for key in ("text_tokens_per_s", "multimodal_tokens_per_s", "multimodal_vs_text_ratio", "packing_efficiency",
                "tracking_overhead"):  # fmt: skip
        assert key in results
    assert results["text_tokens_per_s"] > 0 and results["multimodal_tokens_per_s"] > 0
    assert 0 < results["packing_efficiency"] <= 1
