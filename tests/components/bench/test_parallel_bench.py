"""`omnistage bench parallel`'s parts that need no torchrun launch: the paper-frames copy of a dataset and
how run_stage reports the encoders' parallelism. (Its per-layout row and JSON document are checked on real
2-process runs in tests/components/training/test_model_parallel.py; the whole command is run by hand,
benchmarks/README.md.)"""

import io
import json

import pytest
import torch
import webdataset as wds
from PIL import Image

from components.bench.paper_frames import write_paper_frame_dataset
from components.training.render import render_samples
from components.training.stage_runner import encoder_parallelism
from model import tokenizer as tok
from model.config import get_preset


def test_paper_frame_dataset_has_the_reports_frame_sizes_and_fits_the_sequence(tiny_dataset, tmp_path):
    frames = write_paper_frame_dataset(tiny_dataset, tmp_path, seq_length=4096)
    assert frames["clips"] > 0 and frames["images"] > 0 and frames["frames_per_clip"] == 16
    assert frames["train_clip_patches_per_frame"] == [576]  # the largest grid whose 16 frames fit 4096
    assert all(576 <= p <= 5832 for p in frames["train_image_patches_per_frame"])
    preset = get_preset("tiny")
    tokenizer = tok.load_tokenizer(tmp_path / "tokenizer.json")
    vision_pad = tok.special_id(tokenizer, tok.VISION_PAD)
    seen = {"image": 0, "video": 0}
    for sample in wds.WebDataset(sorted(str(p) for p in (tmp_path / "shards").glob("*.tar")), shardshuffle=False):
        meta = json.loads(sample["json"])
        names = sorted(k for k in sample if k.endswith(".jpg"))
        if not names:
            continue
        width, height = Image.open(io.BytesIO(sample[names[0]])).size
        patches = (width // 14) * (height // 14)
        assert width % 28 == 0 and height % 14 == 0 and 576 <= patches <= 5832
        for rendered in render_samples(sample, tokenizer, preset.vit, preset.audio_encoder):
            pairs = 1 if meta["modality"] == "image" else 8
            assert rendered.input_ids.count(vision_pad) == pairs * patches // preset.vit.merge
            assert len(rendered) <= 4096
            seen[meta["modality"]] += 1
        if meta["modality"] == "video":
            assert len(names) == 16 and len(meta["layout"]) == 8
    assert seen["image"] and seen["video"]
    with pytest.raises(ValueError, match="needs a sequence of at least"):
        write_paper_frame_dataset(tiny_dataset, tmp_path / "short", seq_length=2048)


def test_encoder_parallelism_is_read_off_the_parameters(single_process):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from model.distributed import ParallelSizes
    from model.omni import OmniModel

    torch.manual_seed(0)
    model = OmniModel(get_preset("tiny"), 5, 6, ParallelSizes())
    assert encoder_parallelism(model) == "replicated"
    fully_shard(model.vit, mesh=init_device_mesh("cpu", (1,)))
    assert encoder_parallelism(model) == "fsdp2"
