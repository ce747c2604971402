"""Score a checkpoint on one eval suite: per-item records, then components.evaluation.results.summarise.

- accuracy: multiple choice by likelihood. Every choice is written as the answer after the item's
  prompt (media + question), tokenised exactly as training renders answers (components.training.render:
  a leading space, then `<eos>`); the choice with the highest mean log-probability per answer token wins
  (`choice_scoring: mean_logprob`, the default). A sum over tokens would favour the choice with fewer
  tokens: with a byte-level BPE a rare or multi-digit answer (" 12", " magenta") splits into more pieces than
  a common one (" 3", " red"), and every extra piece adds a negative log-probability. All choices of an
  item run as one batch. Option-in-prompt scoring (listing the choices and asking for a letter) is not
  offered: training never shows a list of options, so it would measure a format the model never learnt.
- wer: greedy transcription of the audio, word error rate = word edits / reference words.
- perplexity: exp(total next-token NLL / tokens) over held-out documents.
Suites with media are scored twice: as given, and with the media blanked (components.evaluation.blanking);
audio-visual suites with `modality_controls` once more per modality, that modality alone blanked.
Scoring runs with torch's deterministic algorithms and no randomness, items sorted by key, so the same
checkpoint and data give identical numbers on a rerun on the same machine.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.evaluation.baselines import best_constant_transcript
from components.evaluation.blanking import blank_media, has_media
from components.evaluation.metrics import word_errors
from components.evaluation.results import SuiteResult, summarise
from components.progress import track
from components.specs.evals import EvalSuiteSpec
from components.training.render import answer_ids, question_ids, render_prompt
from model import tokenizer as tok
from model.omni import IGNORE, OmniBatch


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    preset: object
    meta: dict


def load_checkpoint_model(checkpoint: Path) -> LoadedModel:
    """The omni model of a stage checkpoint, in eval mode, with the tokenizer it was trained with."""
    from components.training.checkpoint import checkpoint_dir, load_weights, read_meta
    from model.config import get_preset
    from model.distributed import init_parallel
    from model.omni import OmniModel

    folder = checkpoint_dir(checkpoint)
    meta = read_meta(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{folder} has no tokenizer.json: it was written by an older omnistage; retrain")
    preset = get_preset(meta["preset"], llm=meta.get("preset_overrides", {}))
    init_parallel(seed=0)
    tokenizer = tok.load_tokenizer(folder / "tokenizer.json")
    # the audio path its last stage trained (checkpoints from before it was recorded used the projector)
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD),
                      audio_input=meta.get("audio_input", "projector"))  # fmt: skip
    load_weights(folder, model, meta["preset"])
    model.eval()
    return LoadedModel(model, tokenizer, preset, meta)


# ------------------------------------------------------------------------------------------------ scoring
def _batch(rows: list[list[int]], labels: list[list[int]], prompt, pad: int) -> OmniBatch:
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([x + [IGNORE] * (width - len(x)) for x in labels])
    n = len(rows)
    return OmniBatch(ids, lab, visuals=(prompt.visuals * n) or None, audio_features=(prompt.audio_features * n) or None)


def _choice_scores(loaded: LoadedModel, prompt, question: list[int], choices: list[str], mean: bool) -> list[float]:
    """Log-probability of each choice's answer tokens (and `<eos>`) after prompt + question: the mean per
    token when `mean`, else the sum."""
    return _question_scores(loaded, prompt, [(question, choices)], mean)[0]


@torch.no_grad()
def _question_scores(loaded: LoadedModel, prompt, questions: list[tuple[list[int], list[str]]], mean: bool
                     ) -> list[list[float]]:  # fmt: skip
    """`_choice_scores` of several questions about one prompt's media, as one batch: the media are encoded
    once for all of them (rows repeat the same input objects), and right padding leaves each row's scores
    as they are alone (causal attention)."""
    rows, labels, sizes = [], [], []
    for question, choices in questions:
        head = prompt.ids + question
        for choice in choices:
            answer = answer_ids(loaded.tokenizer, choice)
            rows.append(head + answer)
            labels.append([IGNORE] * (len(head) - 1) + answer + [IGNORE])
        sizes.append(len(choices))
    batch = _batch(rows, labels, prompt, tok.special_id(loaded.tokenizer, tok.EOS))
    logp = F.log_softmax(loaded.model.text_logits(batch).float(), dim=-1)
    target = batch.labels.clamp(min=0)
    scored = batch.labels != IGNORE
    picked = logp.gather(-1, target[..., None])[..., 0] * scored
    total = picked.sum(-1)
    flat = (total / scored.sum(-1) if mean else total).tolist()
    return [flat[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))]


@torch.no_grad()
def _greedy(loaded: LoadedModel, prompt, max_new: int = 32) -> str:
    eos = tok.special_id(loaded.tokenizer, tok.EOS)
    ids = list(prompt.ids)
    out: list[int] = []
    for _ in range(max_new):
        batch = _batch([ids], [[IGNORE] * len(ids)], prompt, eos)
        nxt = int(loaded.model.text_logits(batch)[0, -1].argmax())
        if nxt == eos:
            break
        out.append(nxt)
        ids.append(nxt)
    return loaded.tokenizer.decode(out)


def _items_of(sample: dict, suite: EvalSuiteSpec) -> list[tuple[str, str, list[str], str | None]]:
    """(question, answer, choices, question type) per scored question of one sample."""
    labels = sample["json"].get("labels", {})
    if suite.classify:
        truth, caption = labels[suite.classify], labels.get("caption", "")
        return [("", caption, [re.sub(rf"\b{re.escape(truth)}\b", c, caption) for c in suite.choices], None)]
    out = []
    for qa in labels.get("qa") or []:
        choices = [str(c) for c in (qa.get("choices") or suite.choices or [])]
        if str(qa["answer"]) not in choices:
            raise ValueError(f"suite {suite.name}: answer {qa['answer']!r} of {sample['json']['key']} is not among "
                             f"its choices {choices}: add it to the suite's choices")  # fmt: skip
        out.append((qa["question"], str(qa["answer"]), choices, qa.get("type")))
    return out


@torch.no_grad()
def _perplexity_item(loaded: LoadedModel, sample: dict) -> dict:
    text = sample["txt"].decode("utf-8")
    ids = [tok.special_id(loaded.tokenizer, tok.BOS)] + loaded.tokenizer.encode(text).ids
    ids.append(tok.special_id(loaded.tokenizer, tok.EOS))
    batch = OmniBatch(torch.tensor([ids]), torch.tensor([ids[1:] + [IGNORE]]))
    logits = loaded.model.text_logits(batch)[0].float()
    nll = F.cross_entropy(logits[:-1], batch.input_ids[0, 1:], reduction="sum")
    return {"nll": float(nll), "tokens": len(ids) - 1}


def score_items(loaded: LoadedModel, suite: EvalSuiteSpec, samples: Iterator[dict]) -> list[dict]:
    """Per-item records of one pass over the samples (see components.evaluation.results)."""
    items: list[dict] = []
    for sample in samples:
        meta = sample["json"]
        base = {"id": meta["key"], "key": meta["key"], "sha256": meta["sha256"]}
        if suite.metric == "perplexity":
            items.append(base | _perplexity_item(loaded, sample))
            continue
        prompt = render_prompt(sample, loaded.tokenizer, loaded.preset.vit, loaded.preset.audio_encoder)
        if suite.metric == "wer":
            hypothesis = _greedy(loaded, prompt)
            errors, words = word_errors(meta["labels"]["transcript"], hypothesis)
            items.append(base | {"errors": errors, "words": words, "hypothesis": hypothesis})
            continue
        family = meta.get("task_family")
        questions = _items_of(sample, suite)
        asked = [(question_ids(loaded.tokenizer, family, q) if q else [], choices) for q, _, choices, _ in questions]
        all_scores = _question_scores(loaded, prompt, asked, suite.choice_scoring == "mean_logprob")
        for number, ((question, answer, choices, kind), scores) in enumerate(zip(questions, all_scores)):
            best = int(np.argmax(scores))
            if suite.classify:  # report the class, not the whole caption
                truth, pick = meta["labels"][suite.classify], suite.choices[best]
            else:
                truth, pick = answer, choices[best]
            items.append(base | {"id": f"{meta['key']}#{number}", "question": question, "type": kind,
                                 "truth": truth, "pick": pick, "correct": float(pick == truth),
                                 "choices": len(choices)})  # fmt: skip
    return items


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Torch's deterministic kernels for the duration (an op without one raises instead of varying)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def suite_chance(suite: EvalSuiteSpec, items: list[dict], vocab_size: int, train_transcripts: list[str]) -> float:
    if suite.chance == "uniform":
        return float(np.mean([1 / i["choices"] for i in items]))
    if suite.chance == "vocabulary":
        return float(vocab_size)
    if suite.chance == "blind_prior":
        return best_constant_transcript(train_transcripts, [i["reference"] for i in items])[1]
    return float(suite.chance)


def score_suite(loaded: LoadedModel, suite: EvalSuiteSpec, samples: list[dict], vocab_size: int,
                train_transcripts: list[str] = ()) -> SuiteResult:  # fmt: skip
    """Score the samples, and (for a suite with media and `blanked_control`) the same samples blanked, and
    once more per modality in `modality_controls` with that modality alone blanked."""
    if suite.output == "speech":
        from components.evaluation.speech_output import score_speech_output

        return score_speech_output(loaded, suite, samples)
    with deterministic():
        items = score_items(loaded, suite, track(samples, f"eval {suite.name}"))
        blanked = None
        if suite.blanked_control and any(has_media(s) for s in samples):
            blanked = score_items(loaded, suite, track(map(blank_media, samples), f"eval {suite.name} (media blanked)",
                                                       total=len(samples)))  # fmt: skip
        controls = {}
        for modality in suite.modality_controls:
            one_blanked = (blank_media(s, {modality}) for s in samples)
            label = f"eval {suite.name} ({modality} blanked)"
            controls[modality] = score_items(loaded, suite, track(one_blanked, label, total=len(samples)))
    if suite.metric == "wer":
        references = {s["json"]["key"]: s["json"]["labels"]["transcript"] for s in samples}
        items = [i | {"reference": references[i["key"]]} for i in items]
        controls = {m: [i | {"reference": references[i["key"]]} for i in c] for m, c in controls.items()}
    chance = suite_chance(suite, items, vocab_size, list(train_transcripts))
    return summarise(suite, items, chance, blanked, controls)
