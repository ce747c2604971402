"""Training/serving parity: the token sequence a session builds from a clip's packets is the training
renderer's for that clip, and the streamed answer is the offline evaluation's greedy answer."""

import pytest
import torch

from components.evaluation.scoring import _greedy
from components.serving.protocol import (
    Limits,
    ProtocolError,
    end_of_turn_message,
    packets_of_sample,
    parse_message,
)
from components.serving.session import StreamSession, speech_frames
from components.training.render import Prompt, question_ids, render_prompt
from model.omni import IGNORE, OmniBatch

QUESTION_FAMILIES = ("av_qa", "video_qa")  # a typed question; voice_qa's is spoken, asr's request is fixed


def _offline_prompt(loaded, sample) -> Prompt:
    family = sample["json"]["task_family"]
    prompt = render_prompt(sample, loaded.tokenizer, loaded.preset.vit, loaded.preset.audio_encoder)
    if family in QUESTION_FAMILIES:
        question = question_ids(loaded.tokenizer, family, sample["json"]["labels"]["qa"][0]["question"])
    else:
        question = question_ids(loaded.tokenizer, family, None) if family == "voice_qa" else []
    return Prompt(prompt.ids + question, prompt.visuals, prompt.audio_features)


def _stream(served, sample):
    session = StreamSession(served)
    family = sample["json"]["task_family"]
    for raw in packets_of_sample(sample):
        session.add_packet(parse_message(raw, served.limits))
    question = sample["json"]["labels"]["qa"][0]["question"] if family in QUESTION_FAMILIES else None
    end = parse_message(end_of_turn_message(family, question), served.limits)
    return session, session.answer(end, max_new=8)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["av_qa", "voice_qa", "video_qa", "asr"])
def test_packets_give_the_training_token_sequence_and_the_offline_answer(served, eval_clips, family):
    sample = eval_clips[family]
    offline = _offline_prompt(served.loaded, sample)
    session, answer = _stream(served, sample)
    assert session.state.ids[: len(offline.ids)] == offline.ids  # the golden layout
    # the same next-token distribution after the prompt: the media features are the whole clip's
    ids = torch.tensor([offline.ids])
    batch = OmniBatch(ids, torch.full_like(ids, IGNORE), visuals=offline.visuals or None,
                      audio_features=offline.audio_features or None)  # fmt: skip
    with torch.no_grad():
        expected = served.loaded.model.text_logits(batch)[0, -1].float()
    torch.testing.assert_close(session._last.text_logits, expected, atol=1e-4, rtol=1e-4)
    assert answer.text == _greedy(served.loaded, offline, max_new=8)  # the same greedy answer


def test_packets_out_of_order_or_of_mixed_kinds_are_refused(served, eval_clips):
    packets = packets_of_sample(eval_clips["av_qa"])
    session = StreamSession(served)
    off_grid = parse_message('{"type": "packet", "frames": ["' + _jpeg_b64(size=(50, 30)) + '"]}', served.limits)
    with pytest.raises(ProtocolError, match="frame 50x30 is not on the ViT's 14x28 grid"):
        session.add_packet(off_grid)
    session.add_packet(parse_message(packets[0], served.limits))  # the refused packet opened no (silent) turn
    with pytest.raises(ProtocolError, match="packet for second 2, expected second 1"):
        session.add_packet(parse_message(packets[2], served.limits))
    silent = parse_message('{"type": "packet", "frames": []}'.replace("[]", '["' + _jpeg_b64() + '"]'), served.limits)
    with pytest.raises(ProtocolError, match="every packet of a turn carries one second of audio"):
        session.add_packet(silent)
    session.add_packet(parse_message(packets[1], served.limits))  # the session goes on


def test_malformed_messages_name_what_is_wrong():
    limits = Limits(max_message_bytes=2000, max_frames=2)
    cases = {
        "{not json": "not JSON",
        '{"type": "hello"}': "unknown message type 'hello'",
        '{"type": "packet", "audio": "***"}': "audio is not valid base64",
        '{"type": "packet", "audio": "AAAA"}': "an even number of bytes",  # 3 bytes
        '{"type": "packet"}': "needs audio, frames or both",
        '{"type": "packet", "frames": ["AAAA"]}': r"frames\[0\] is not an image",
        '{"type": "packet", "frames": ["a", "b", "c"]}': "3 frames in one packet, the limit is 2",
        '{"type": "end_of_turn", "task": "sing"}': "unknown task 'sing'",
        '{"type": "packet", "audio": "' + "A" * 3000 + '"}': "over the 2000-byte limit",
    }
    for text, message in cases.items():
        with pytest.raises(ProtocolError, match=message):
            parse_message(text, limits)


def test_the_spoken_answer_lasts_as_long_as_its_words_take():
    assert speech_frames("red", 16.67) == 12  # (0.3 + 0.375) s
    assert speech_frames("the red square moves left", 16.67) > 3 * speech_frames("red", 16.67)


def _jpeg_b64(size=(56, 28)) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, "JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_turn_longer_than_max_turn_seconds_is_refused(served, eval_clips):
    from components.serving.served_model import ServedModel

    short = ServedModel(served.loaded, served.uri, limits=Limits(max_turn_seconds=2))
    packets = packets_of_sample(eval_clips["av_qa"])
    session = StreamSession(short)
    for raw in packets[:2]:
        session.add_packet(parse_message(raw, short.limits))
    with pytest.raises(ProtocolError, match="a turn holds at most 2 seconds"):
        session.add_packet(parse_message(packets[2], short.limits))


def test_max_tokens_bounds_the_conversation_and_defaults_to_the_trained_length(served, eval_clips):
    from components.serving.served_model import ServedModel
    from model.incremental import ContextFull

    assert served.max_tokens == served.loaded.preset.llm.seq_length  # no limit given: what the model trained at
    small = ServedModel(served.loaded, served.uri, limits=Limits(max_tokens=64))
    session = StreamSession(small)
    packets = packets_of_sample(eval_clips["av_qa"])
    with pytest.raises(ContextFull, match="64-token context"):
        for raw in packets:
            session.add_packet(parse_message(raw, small.limits))


def test_the_serving_endpoint_is_recorded_on_the_version(served, registered):
    from components.serving.served_model import SERVED_AT_TAG, record_endpoint
    from components.tracking.experiments import mlflow_client

    record_endpoint(served, registered["uri"], "http://omnistage-serve.omnistage.svc:8765")
    tags = mlflow_client(registered["uri"]).get_model_version(served.name, served.version).tags
    assert tags[SERVED_AT_TAG] == "http://omnistage-serve.omnistage.svc:8765"


def test_warm_up_runs_every_part_a_conversation_runs(served):
    """A server warms up before it reports ready (load_served_model): one throwaway turn through the ViT, the
    audio encoder, the LLM, the audio heads and the codec's decoder, so the first user does not pay their
    first-call costs (benchmarks/README.md: 0.8-2.5 s to first audio cold, ~0.3 s warm)."""
    from components.serving.session import warm_up

    model = served.loaded.model
    parts = {"vit": model.vit, "audio_encoder": model.audio_encoder, "llm": model.llm,
             "semantic head": model.audio_heads[0], "codec decoder": model.codec.decoder}  # fmt: skip
    called: set[str] = set()
    hooks = [m.register_forward_hook(lambda *_, name=name: called.add(name)) for name, m in parts.items()]
    try:
        assert warm_up(served) > 0
    finally:
        for hook in hooks:
            hook.remove()
    assert called == set(parts)
