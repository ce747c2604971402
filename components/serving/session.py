"""One conversation with the served model: packets in, each second prefilled into the KV cache as soon as
it is final, an answer in text and speech when the turn ends.

The token sequence is the training renderer's (components.training.render.render_prompt + question_ids),
built a second at a time with the same pieces: `user_turn_start`, model.layout.chunk_ids per second, the
audio markers, chat_template.request_ids. Each second is prefilled one packet late, when the next one has
arrived: the audio encoder looks a few steps ahead (and the fbank window a few ms), and a frame pair may
straddle two seconds, so a second's features are only those of the whole clip once the next second is in.
Its audio is encoded together with everything heard so far in the turn (the FSMN reaches back), which is
exactly what training's whole-clip encoding gives it (tests/components/serving: golden token sequence and
the same answer as offline evaluation).

Later turns continue the same sequence (`<eos>` after the answer, then `<|user|>`): the history stays in the
cache. Training renders one turn per sample, so answers after the first turn are outside what the tiny
curriculum teaches.

The spoken answer is the model's own speech output, asked the way training asks for it
(components.training.speech_render: `<|user|> say: TEXT<|assistant|>`, in its own context), decoded to
audio with the codec a few frames at a time: each mel frame is final once the decoder's look-ahead frames
exist (AudioCodecConfig.decoder_lookahead). The model has no end-of-speech token, so the answer's length
comes from its words at the demo voices' pace (`speech_frames`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from components.serving.protocol import EndOfTurn, Packet, ProtocolError
from components.training.chat_template import request_ids, user_turn_start
from components.training.speech_render import speech_prompt_ids
from model import tokenizer as tok
from model.audio_encoder import fbank, splice_frames
from model.incremental import IncrementalOmni
from model.layout import audio_steps_per_chunk, chunk_ids, frame_pairs
from model.vit import VisualInput

# The demo voices speak at espeak's 160 words per minute (components.demo_data.synth.speak): 0.375 s per
# word, plus a short lead-in and tail.
SECONDS_PER_WORD, SPEECH_PADDING_S = 0.375, 0.3
SPEECH_CHUNK_FRAMES = 8  # codec frames per streamed audio chunk: 0.48 s at 16.67 Hz


def speech_frames(text: str, frame_rate: float) -> int:
    """How many codec frames the spoken answer gets (the model has no end-of-speech token)."""
    return max(1, math.ceil(frame_rate * (SPEECH_PADDING_S + SECONDS_PER_WORD * len(text.split()))))


def default_task(has_audio: bool, has_video: bool) -> str:
    if has_audio and has_video:
        return "av_qa"
    return "voice_qa" if has_audio else "video_qa"


@dataclass
class _Turn:
    has_audio: bool
    packets: list[Packet] = field(default_factory=list)
    prefilled: int = 0  # seconds already in the cache

    @property
    def frames(self) -> list[torch.Tensor]:
        return [f for p in self.packets for f in p.frames]


@dataclass
class Answer:
    text: str
    decode_ms: float


class StreamSession:
    """Not thread-safe on its own: the server runs one session's calls one at a time, and every call that
    runs the model holds the served model's lock (sessions share its weights, not their caches)."""

    def __init__(self, served):
        self.served = served
        self.state = IncrementalOmni(served.loaded.model, served.max_tokens)
        self.turn: _Turn | None = None
        self.turns = 0
        self._carry: list[int] = []  # ids to open the next turn with (the last answer's `<eos>`)

    # ------------------------------------------------------------------------------------------ input
    def add_packet(self, packet: Packet) -> tuple[list[int], float]:
        """(seconds prefilled by this packet, milliseconds it took)."""
        # a refused first packet opens no turn: the turn's kind comes from the first packet it accepts
        turn = self.turn or _Turn(has_audio=packet.audio is not None)
        expected = len(turn.packets)
        if packet.second is not None and packet.second != expected:
            raise ProtocolError(f"packet for second {packet.second}, expected second {expected} of this turn "
                                "(seconds count from 0 in each turn; was a packet lost?)", "second")  # fmt: skip
        if (packet.audio is not None) != turn.has_audio:
            raise ProtocolError("this turn's stream " + ("has" if turn.has_audio else "has no") + " audio: every "
                                "packet of a turn carries one second of audio, or none does", "audio")  # fmt: skip
        if packet.audio is not None and turn.packets and turn.packets[-1].audio.numel() != self.served.sample_rate:
            raise ProtocolError(f"second {expected - 1} held {turn.packets[-1].audio.numel()} audio samples: every "
                                f"packet but a turn's last holds exactly one second ({self.served.sample_rate})",
                                "audio")  # fmt: skip
        if expected >= self.served.limits.max_turn_seconds:
            raise ProtocolError(f"a turn holds at most {self.served.limits.max_turn_seconds} seconds: end the turn",
                                "second")  # fmt: skip
        self._check_frames(turn, packet)
        self.turn = turn
        turn.packets.append(packet)
        start = time.perf_counter()
        done = []
        while turn.prefilled < len(turn.packets) - 1:  # a second is final once the next one is in
            self._prefill(turn.prefilled, final=False)
            done.append(turn.prefilled)
            turn.prefilled += 1
        return done, (time.perf_counter() - start) * 1000

    def _check_frames(self, turn: _Turn, packet: Packet) -> None:
        frames = turn.frames + packet.frames
        if not frames:
            return
        vit = self.served.loaded.preset.vit
        for i, frame in enumerate(packet.frames):
            h, w = frame.shape[1:]
            if h % vit.patch_size or w % (vit.patch_size * vit.merge):
                raise ProtocolError(f"frame {w}x{h} is not on the ViT's {vit.patch_size}x{vit.patch_size * vit.merge}"
                                    " grid: resize it as ingestion does (components.ingest.sampling."
                                    "native_resolution)", f"frames[{i}]")  # fmt: skip
            if frame.shape != frames[0].shape:
                raise ProtocolError(f"frame {w}x{h} differs from this turn's first frame "
                                    f"{frames[0].shape[2]}x{frames[0].shape[1]}", f"frames[{i}]")  # fmt: skip

    def _prefill(self, second: int, final: bool, request: list[int] | None = None) -> None:
        turn, served = self.turn, self.served
        tokenizer = served.loaded.tokenizer
        ids: list[int] = []
        if second == 0:
            opening = user_turn_start(tokenizer) if self.turns == 0 else [tok.special_id(tokenizer, tok.USER)]
            ids += self._carry + opening
            self._carry = []
            if turn.has_audio:
                ids.append(tok.special_id(tokenizer, tok.AUDIO_START))
        visuals, vision_tokens = self._second_frames(second)
        audio, steps = self._second_audio(second) if turn.has_audio else (None, 0)
        ids += chunk_ids(tokenizer, second, vision_tokens, steps)
        if final:
            if turn.has_audio:
                ids.append(tok.special_id(tokenizer, tok.AUDIO_END))
            ids += request or []
        with served.lock:
            self._last = self.state.extend(ids, visuals=visuals, audio=audio)

    def _second_frames(self, second: int) -> tuple[list[VisualInput] | None, int]:
        """The frame pairs whose first frame falls in `second` (model.layout.frame_pairs), and their tokens."""
        turn = self.turn
        first = sum(len(p.frames) for p in turn.packets[:second])
        indices = list(range(first, first + len(turn.packets[second].frames)))
        pairs = frame_pairs(indices)
        if not pairs:
            return None, 0
        frames = turn.frames
        starts = [i for i in indices if i % 2 == 0]
        # a pair's second frame may be in the next packet; a clip's last odd frame is doubled, as the ViT does
        pixels = torch.stack([frames[j] for s in starts for j in (s, min(s + 1, len(frames) - 1))])
        vit = self.served.loaded.preset.vit
        per_pair = (pixels.shape[2] // vit.patch_size) * (pixels.shape[3] // vit.patch_size) // vit.merge
        return [VisualInput(pixels)], pairs * per_pair

    def _second_audio(self, second: int) -> tuple[torch.Tensor, int]:
        """That second's audio features, encoded with everything the turn has heard (see the module doc)."""
        model, cfg = self.served.loaded.model, self.served.loaded.preset.audio_encoder
        heard = torch.cat([p.audio for p in self.turn.packets])
        features = splice_frames(fbank(heard, cfg), cfg.splice)
        steps = audio_steps_per_chunk(len(self.turn.packets), features.shape[0], cfg.steps_per_second)
        start = sum(steps[:second])
        with self.served.lock, torch.no_grad():
            encoded = model.encode_audio([features])[0]
        return encoded[start : start + steps[second]], steps[second]

    # ----------------------------------------------------------------------------------------- answer
    def request(self, end: EndOfTurn) -> list[int]:
        turn = self.turn
        task = end.task or default_task(turn.has_audio, bool(turn.frames))
        try:
            return request_ids(self.served.loaded.tokenizer, task, end.question)
        except ValueError as exc:
            raise ProtocolError(str(exc), "question") from None

    def answer(self, end: EndOfTurn, max_new: int = 32) -> Answer:
        """Close the turn (its last second, the audio end marker, the request) and decode the text answer."""
        if self.turn is None or not self.turn.packets:
            raise ProtocolError("end_of_turn before any packet: send at least one second first", "type")
        request = self.request(end)
        start = time.perf_counter()
        turn = self.turn
        while turn.prefilled < len(turn.packets):
            last = turn.prefilled == len(turn.packets) - 1
            self._prefill(turn.prefilled, final=last, request=request if last else None)
            turn.prefilled += 1
        tokenizer = self.served.loaded.tokenizer
        eos = tok.special_id(tokenizer, tok.EOS)
        with self.served.lock:
            said = self.state.greedy_text(self._last, eos, max_new)
        self._carry = [eos]
        self.turn, self.turns = None, self.turns + 1
        return Answer(tokenizer.decode(said), (time.perf_counter() - start) * 1000)

    def speech(self, text: str) -> Iterator[np.ndarray]:
        """The spoken answer as 16-bit PCM chunks, each as soon as its mel frames are final."""
        served = self.served
        model, tokenizer = served.loaded.model, served.loaded.tokenizer
        codec = model.codec
        speaker = IncrementalOmni(model, served.max_tokens)
        prompt = speech_prompt_ids(tokenizer, text)
        total = speech_frames(text, codec.cfg.frame_rate)
        with served.lock:
            frames = speaker.greedy_speech(speaker.extend(prompt), tok.special_id(tokenizer, tok.SPEECH_OUT), total)
        codes: list[torch.Tensor] = []
        emitted = 0  # mel frames already turned into audio
        while True:
            with served.lock:
                frame = next(frames, None)
            if frame is not None:
                codes.append(frame)
            final = len(codes) if frame is None else len(codes) - codec.cfg.decoder_lookahead
            if final - emitted >= SPEECH_CHUNK_FRAMES or (frame is None and final > emitted):
                yield _pcm16(_decode_frames(codec, torch.stack(codes), emitted, final))
                emitted = final
            if frame is None:
                return


@torch.no_grad()
def _decode_frames(codec, codes: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Audio of mel frames [start, end) of `codes` [frames, books]: the mel is computed from every code so
    far (the decoder looks ahead, never further than the codes given), the waveform from that span."""
    return codec.vocode(codec.decode_mel(codec.quantizer.decode(codes))[start:end])


def _pcm16(wave: torch.Tensor) -> np.ndarray:
    return (wave.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()


def warm_up(served) -> float:
    """One throwaway turn (a silent second with a black frame pair, its answer spoken) through every part a
    conversation runs: ViT, audio encoder, KV-cached LLM, codec, vocoder. Their first call pays one-time
    costs (allocations, kernel and thread-pool set-up): measured on the 2-core machine, a fresh server's
    first clip waited 0.8-2.5 s for its first audio, the next ones 0.26-0.36 s. Servers warm up before they
    report ready, so no user (and no gate latency check) pays it. Returns the milliseconds it took."""
    start = time.perf_counter()
    vit = served.loaded.preset.vit
    side = vit.patch_size * vit.merge * 4  # on the ViT's grid
    frame = torch.zeros(3, side, side)
    session = StreamSession(served)
    session.add_packet(Packet(torch.zeros(served.sample_rate), [frame, frame], second=0))
    for _ in session.speech(session.answer(EndOfTurn(task="asr")).text or " yes"):
        pass
    return (time.perf_counter() - start) * 1000
