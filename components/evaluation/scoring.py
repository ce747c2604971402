"""Score a checkpoint on one eval suite: per-item results, the suite metric and its bootstrap 95% CI.

- accuracy: multiple choice by likelihood. Every choice is written as the answer after the item's
  prompt (media + question); the choice whose answer tokens (and end-of-sequence) the model finds most
  likely is its pick. All choices of an item run as one batch.
- wer: greedy transcription of the audio, word error rate = word edits / reference words.
- perplexity: exp(total next-token NLL / tokens) over held-out documents.
The CI resamples items (not tokens) with replacement, so it reflects how few items a suite has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    load_weights(folder, model, meta["preset"])
    model.eval()
    return LoadedModel(model, tokenizer, preset, meta)


@dataclass
class SuiteResult:
    suite: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    chance: float
    higher_is_better: bool
    n_items: int
    items: list[dict] = field(default_factory=list)  # per item: key, sha256 and what was scored

    @property
    def above_chance(self) -> bool:
        """The whole CI is on the better side of chance."""
        return self.ci_low > self.chance if self.higher_is_better else self.ci_high < self.chance

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "items"} | {"above_chance": self.above_chance}


# ------------------------------------------------------------------------------------------------ metrics
def _normalise(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(Levenshtein distance over words, reference word count)."""
    ref, hyp = _normalise(reference), _normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def aggregate(metric: str, items: list[dict]) -> float:
    if metric == "accuracy":
        return float(np.mean([i["correct"] for i in items]))
    if metric == "wer":
        return sum(i["errors"] for i in items) / max(1, sum(i["words"] for i in items))
    return float(np.exp(sum(i["nll"] for i in items) / max(1, sum(i["tokens"] for i in items))))


def bootstrap_ci(metric: str, items: list[dict], samples: int, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = [aggregate(metric, [items[i] for i in rng.integers(0, len(items), len(items))]) for _ in range(samples)]
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


# ------------------------------------------------------------------------------------------------ scoring
def _batch(rows: list[list[int]], labels: list[list[int]], prompt, pad: int) -> OmniBatch:
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([x + [IGNORE] * (width - len(x)) for x in labels])
    n = len(rows)
    return OmniBatch(ids, lab, visuals=(prompt.visuals * n) or None, audio_features=(prompt.audio_features * n) or None)


@torch.no_grad()
def _choice_scores(loaded: LoadedModel, prompt, question: list[int], choices: list[str]) -> list[float]:
    """Sum of log-probabilities of each choice's answer tokens after prompt + question."""
    head = prompt.ids + question
    rows, labels = [], []
    for choice in choices:
        answer = answer_ids(loaded.tokenizer, choice)
        rows.append(head + answer)
        labels.append([IGNORE] * (len(head) - 1) + answer + [IGNORE])
    batch = _batch(rows, labels, prompt, tok.special_id(loaded.tokenizer, tok.EOS))
    logp = F.log_softmax(loaded.model.text_logits(batch).float(), dim=-1)
    target = batch.labels.clamp(min=0)
    picked = logp.gather(-1, target[..., None])[..., 0] * (batch.labels != IGNORE)
    return picked.sum(-1).tolist()


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


def _items_of(sample: dict, suite: EvalSuiteSpec) -> list[tuple[str, str, list[str]]]:
    """(question, answer, choices) per scored question of one sample."""
    labels = sample["json"].get("labels", {})
    if suite.classify:
        truth, caption = labels[suite.classify], labels.get("caption", "")
        return [("", caption, [re.sub(rf"\b{re.escape(truth)}\b", c, caption) for c in suite.choices])]
    out = []
    for qa in labels.get("qa") or []:
        choices = [str(c) for c in (qa.get("choices") or suite.choices or [])]
        if str(qa["answer"]) not in choices:
            raise ValueError(f"suite {suite.name}: answer {qa['answer']!r} of {sample['json']['key']} is not among "
                             f"its choices {choices}: add it to the suite's choices")  # fmt: skip
        out.append((qa["question"], str(qa["answer"]), choices))
    return out


def score_suite(loaded: LoadedModel, suite: EvalSuiteSpec, samples: Iterable[dict], vocab_size: int) -> SuiteResult:
    if suite.output == "speech":
        from components.evaluation.speech_output import score_speech_output

        return score_speech_output(loaded, suite, samples)
    items: list[dict] = []
    chances: list[float] = []
    for sample in samples:
        meta = sample["json"]
        base = {"key": meta["key"], "sha256": meta["sha256"]}
        if suite.metric == "perplexity":
            text = sample["txt"].decode("utf-8")
            ids = [tok.special_id(loaded.tokenizer, tok.BOS)] + loaded.tokenizer.encode(text).ids
            ids.append(tok.special_id(loaded.tokenizer, tok.EOS))
            batch = OmniBatch(torch.tensor([ids]), torch.tensor([ids[1:] + [IGNORE]]))
            with torch.no_grad():
                logits = loaded.model.text_logits(batch)[0].float()
            nll = F.cross_entropy(logits[:-1], batch.input_ids[0, 1:], reduction="sum")
            items.append(base | {"nll": float(nll), "tokens": len(ids) - 1})
        else:
            prompt = render_prompt(sample, loaded.tokenizer, loaded.preset.vit, loaded.preset.audio_encoder)
            if suite.metric == "wer":
                hypothesis = _greedy(loaded, prompt)
                errors, words = word_errors(meta["labels"]["transcript"], hypothesis)
                items.append(base | {"errors": errors, "words": words, "hypothesis": hypothesis})
            else:
                family = meta.get("task_family")
                for question, answer, choices in _items_of(sample, suite):
                    qids = question_ids(loaded.tokenizer, family, question) if question else []
                    scores = _choice_scores(loaded, prompt, qids, choices)
                    best = int(np.argmax(scores))
                    if suite.classify:  # report the class, not the whole caption
                        truth, pick = meta["labels"][suite.classify], suite.choices[best]
                    else:
                        truth, pick = answer, choices[best]
                    items.append(base | {"question": question, "truth": truth, "pick": pick,
                                         "correct": float(pick == truth), "choices": len(choices)})  # fmt: skip
                    chances.append(1 / len(choices))
    if not items:
        raise ValueError(f"suite {suite.name}: no eval items of family {suite.family} in the dataset")
    value = aggregate(suite.metric, items)
    low, high = bootstrap_ci(suite.metric, items, suite.bootstrap_samples)
    if suite.chance == "uniform":
        chance = float(np.mean(chances))
    elif suite.chance == "vocabulary":
        chance = float(vocab_size)
    else:
        chance = float(suite.chance)
    return SuiteResult(suite.name, suite.metric, value, low, high, chance, suite.higher_is_better, len(items), items)


def write_results(results: list[SuiteResult], path: Path) -> None:
    path.write_text(json.dumps([r.summary() | {"items": r.items} for r in results], indent=1))
