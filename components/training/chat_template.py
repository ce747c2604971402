"""The chat template every non-text sample is rendered with, in training and evaluation alike.

    <|bos|><|user|> MEDIA  INSTRUCTION[ QUESTION]<|assistant|> ANSWER<|eos|>

The instruction names the task (transcribe / answer / describe), so one audio stream can be asked for
its transcript (asr) or for the answer to what it says (voice_qa). `<|user|>` and `<|assistant|>` are the
turn markers `model.tokenizer` reserves. Families whose request never changes (asr, image_caption) close
the user turn right after the media; QA families close it after their question (`request_ids`).
"""

from __future__ import annotations

from tokenizers import Tokenizer

from model import tokenizer as tok

INSTRUCTIONS = {
    "asr": "Transcribe the speech.",
    "image_caption": "Describe the image.",
    "voice_qa": "Answer the spoken question.",
    "video_qa": "Answer the question about the video.",
    "av_qa": "Answer the question about what you see and hear.",
}
FIXED_REQUEST = ("asr", "image_caption")  # the user turn is complete after the media
SPOKEN_QUESTION = ("voice_qa",)  # the question is in the audio: the text turn carries the instruction only


def instruction(family: str) -> str:
    if family not in INSTRUCTIONS:
        raise ValueError(f"task family {family!r} has no instruction: add one to INSTRUCTIONS in "
                         f"components/training/chat_template.py (known: {sorted(INSTRUCTIONS)})")  # fmt: skip
    return INSTRUCTIONS[family]


def user_turn_start(tokenizer: Tokenizer) -> list[int]:
    return [tok.special_id(tokenizer, tok.BOS), tok.special_id(tokenizer, tok.USER)]


def request_ids(tokenizer: Tokenizer, family: str, question: str | None = None) -> list[int]:
    """The rest of the user turn after the media: instruction, the question where it is text, then the
    assistant marker. `question` is required for text questions, ignored for spoken ones (it is in the
    audio) and refused for fixed requests."""
    text = " " + instruction(family)
    if family in FIXED_REQUEST:
        if question:
            raise ValueError(f"task family {family!r} takes no question (its request is fixed), got {question!r}")
    elif family not in SPOKEN_QUESTION:
        if not question:
            raise ValueError(f"task family {family!r} asks a text question: pass it")
        text += " " + question
    return tokenizer.encode(text).ids + [tok.special_id(tokenizer, tok.ASSISTANT)]


def answer_ids(tokenizer: Tokenizer, answer: str) -> list[int]:
    """The assistant turn: the answer, then end of sequence."""
    return tokenizer.encode(" " + str(answer)).ids + [tok.special_id(tokenizer, tok.EOS)]
