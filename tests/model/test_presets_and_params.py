import json
import subprocess

import pytest

from model.config import PRESETS, get_preset
from tests.conftest import VENV_BIN


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_consistent(name):
    preset = get_preset(name)
    assert preset.vit.out_hidden_size == preset.llm.hidden_size == preset.audio_encoder.output_size


def test_a_stage_can_override_preset_fields():
    preset = get_preset("tiny", llm={"rope_theta": 5e6, "seq_length": 512})
    assert preset.llm.rope_theta == 5e6 and preset.llm.seq_length == 512
    assert get_preset("tiny").llm.rope_theta == 10000.0  # the original is untouched
    with pytest.raises(ValueError, match="no field"):
        get_preset("tiny", llm={"rope_base": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="target_ffn_experts_per_token"):
        get_preset("tiny", llm={"target_ffn_experts_per_token": 99})


@pytest.mark.slow
def test_full_size_parameter_counts_match_the_paper():
    """`omnistage model params --json` counts the built modules on the meta device (no memory)."""
    out = subprocess.run([str(VENV_BIN / "omnistage"), "model", "params", "--preset", "longcat-flash-omni", "--json"],
                         capture_output=True, text=True, check=True, timeout=600).stdout  # fmt: skip
    counts = json.loads(out)
    paper = {"llm_total": 560.66e9, "llm_activated_k0": 18.69e9, "llm_activated_k8": 27.15e9,
             "llm_activated_k12": 31.38e9, "vit_total": 637e6}  # fmt: skip
    for key, expected in paper.items():
        assert abs(counts[key] - expected) / expected < 0.005, (key, counts[key], expected)
    for side in ("audio_encoder_total", "codec_decoder"):
        assert 0.5e9 < counts[side] < 0.7e9  # "roughly 600M" each (REFERENCE section 1)
