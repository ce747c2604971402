"""Train the text tokenizer on the text of an ingested dataset: plain texts, captions, transcripts,
questions and answers from the shards' sample metadata, and the chat template's instruction of each
sample's task family (so every prompt's instruction is a few tokens, not a byte string).

    omnistage tokenizer --dataset work/datasets/demo --out work/tokenizer.json --vocab-size 1024
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from components.training.chat_template import INSTRUCTIONS
from model.tokenizer import SPECIAL_TOKENS, train_tokenizer


def _label_texts(labels: dict) -> Iterator[str]:
    for field in ("caption", "transcript"):
        if isinstance(labels.get(field), str):
            yield labels[field]
    for qa in labels.get("qa", []) or []:
        yield from (str(qa[k]) for k in ("question", "answer") if k in qa)


def corpus_texts(dataset_dir: Path, split: str | None = "train") -> Iterator[str]:
    """Every text of the dataset's shards (only `split` unless None), in shard order."""
    shards = sorted((Path(dataset_dir) / "shards").glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"{dataset_dir}/shards holds no .tar shards: ingest the dataset first")
    for shard in shards:
        with tarfile.open(shard) as tar:
            texts: dict[str, bytes] = {}
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext in ("json", "txt"):
                    texts[member.name] = tar.extractfile(member).read()
            for name, data in texts.items():
                if not name.endswith(".json"):
                    continue
                meta = json.loads(data)
                if split is not None and meta.get("split") != split:
                    continue
                yield from _label_texts(meta.get("labels", {}))
                if meta.get("task_family") in INSTRUCTIONS:
                    yield INSTRUCTIONS[meta["task_family"]]
                text = texts.get(name[: -len("json")] + "txt")
                if text is not None:
                    yield text.decode("utf-8")


def build_tokenizer(dataset_dir: Path, out: Path, vocab_size: int) -> dict:
    texts = list(corpus_texts(dataset_dir))
    if not texts:
        raise ValueError(f"{dataset_dir}: no training-split text found to train a tokenizer on")
    tokenizer = train_tokenizer(texts, vocab_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))
    return {"texts": len(texts), "vocab_size": tokenizer.get_vocab_size(), "special_tokens": len(SPECIAL_TOKENS),
            "path": str(out)}  # fmt: skip
