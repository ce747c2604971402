"""Turn one ingested sample into the model's interleaved token sequence (REFERENCE.md section 5).

For each 1-second chunk of the sample's layout: `second{t}:` as text, then that second's vision
placeholders (one per LLM vision token of its frame pair), then that second's audio placeholders (12 or
13 encoder steps at 12.5 Hz, or 16-17 codec frames at 16.67 Hz when speech is fed as codec tokens), the
whole audio-visual stream wrapped in audio start/end markers. The
placeholders are later replaced by ViT / audio-encoder features (`model.omni.OmniModel`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

from model import tokenizer as tok


@dataclass
class InterleavedSequence:
    input_ids: list[int]
    num_vision_tokens: int
    num_audio_tokens: int


def audio_steps_per_chunk(num_chunks: int, total_steps: int, rate_hz: float = 12.5) -> list[int]:
    """Encoder steps falling in each second: 12 and 13 alternating at 12.5 Hz; a partial last second
    gets what is left of `total_steps`."""
    edges = [min(int(i * rate_hz), total_steps) for i in range(num_chunks)] + [total_steps]
    return [b - a for a, b in zip(edges, edges[1:])]


def interleave_chunks(
    tokenizer: Tokenizer, layout: list[dict], vision_tokens_per_frame_pair: int, num_audio_steps: int,
    audio_rate_hz: float = 12.5, audio_token: str = tok.AUDIO_PAD,
) -> InterleavedSequence:  # fmt: skip
    """`num_audio_steps`: audio positions of the clip (0 without audio): audio-encoder steps at 12.5 Hz
    as `<|audio_pad|>` (the default), or codec frames at 16.67 Hz as `<|speech|>` (speech as codec tokens)."""
    has_audio = num_audio_steps > 0
    ids = [tok.special_id(tokenizer, tok.AUDIO_START)] if has_audio else []
    steps = audio_steps_per_chunk(len(layout), num_audio_steps, audio_rate_hz)
    num_vision = num_audio = 0
    for chunk, audio_steps in zip(layout, steps):
        pairs = frame_pairs(chunk["frames"])
        ids += chunk_ids(tokenizer, chunk["second"], pairs * vision_tokens_per_frame_pair, audio_steps, audio_token)
        num_vision += pairs * vision_tokens_per_frame_pair
        num_audio += audio_steps
    if has_audio:
        ids.append(tok.special_id(tokenizer, tok.AUDIO_END))
    return InterleavedSequence(ids, num_vision, num_audio)


def frame_pairs(frames: list[int]) -> int:
    """The ViT's temporal units (frame pairs) a second holds. The ViT takes frames in consecutive pairs over
    the whole clip; a pair belongs to the second in which its first frame falls, so the counts over the
    seconds add up to the ViT's temporal units."""
    return sum(1 for frame in frames if frame % 2 == 0)


def chunk_ids(tokenizer: Tokenizer, second: int, vision_tokens: int, audio_steps: int,
              audio_token: str = tok.AUDIO_PAD) -> list[int]:  # fmt: skip
    """One second of the stream: `second{t}:` as text, its vision placeholders, its audio placeholders (the
    training renderer lays out a clip with it, the streaming server one packet at a time)."""
    return (tokenizer.encode(f"second{second}:").ids + [tok.special_id(tokenizer, tok.VISION_PAD)] * vision_tokens
            + [tok.special_id(tokenizer, audio_token)] * audio_steps)  # fmt: skip
