import pytest

from components.ingest.discover import InputFile
from components.ingest.probe import probe_input
from components.specs.dataset import Modality


def _item(path, modality=Modality.AUTO):
    return InputFile("s", modality, None, str(path), path.name)


@pytest.mark.parametrize(
    ("name", "modality", "codec", "size"),
    [
        ("video/lego.mp4", "video", "h264", (560, 320)),
        ("video/lego.ogv", "video", "theora", (560, 320)),
        ("video/lego.webm", "video", "vp8", (560, 320)),
        ("video/two_frames.mp4", "video", "h264", None),
        ("audio/front_center.wav", "audio", None, None),
    ],
)
def test_probe_real_media(shared_media, name, modality, codec, size):
    result = probe_input(_item(shared_media / name))
    assert result.reason is None
    assert result.modality == modality
    assert len(result.sha256) == 64 and result.size_bytes == (shared_media / name).stat().st_size
    if codec:
        assert result.video_codec == codec
    if size:
        assert (result.width, result.height) == size
    if modality == "audio":
        assert result.sample_rate == 48000 and result.duration_s > 0


def test_probe_reasons_for_broken_inputs(tmp_path, shared_media):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "fake.mp4").write_text("not a video at all\n")
    assert probe_input(_item(tmp_path / "zero.mp4")).reason == "empty file (0 bytes)"
    fake = probe_input(_item(tmp_path / "fake.mp4"))
    assert fake.reason.startswith("not a media file ffprobe can read") and fake.sha256
    audio_as_video = probe_input(_item(shared_media / "audio" / "noise.wav", Modality.VIDEO))
    assert audio_as_video.reason == "audio-only file where the source requires video"


def test_probe_ignores_data_subtitle_and_attachment_streams(codec_media):
    folder, codecs = codec_media
    for name in ("theora_skeleton.ogv", "h264_subtitle_attachment.mkv"):
        result = probe_input(_item(folder / name, Modality.VIDEO))
        assert result.reason is None, (name, result.reason)
        assert (result.modality, result.video_codec, result.audio_codec) == ("video", *codecs[name])
        assert (result.width, result.height) == (96, 64) and abs(result.duration_s - 1.0) < 0.1
