import pytest

from components.ingest.pipeline import ingest_dataset
from components.training.tokenizer_corpus import build_tokenizer, corpus_texts
from model import tokenizer as tok
from tests.conftest import corpus_spec


@pytest.mark.slow
def test_tokenizer_trained_on_the_ingested_corpus(tiny_corpus, tmp_path):
    out = tmp_path / "ds"
    ingest_dataset(corpus_spec(tiny_corpus), out)
    texts = list(corpus_texts(out))
    assert any("plus" in t for t in texts) and any("?" in t for t in texts)  # plain text and questions
    summary = build_tokenizer(out, tmp_path / "tokenizer.json", vocab_size=300)
    tokenizer = tok.load_tokenizer(summary["path"])
    assert tokenizer.get_vocab_size() <= 300
    assert tokenizer.decode(tokenizer.encode("What is seven plus two?").ids) == "What is seven plus two?"
    assert len(tokenizer.encode(tok.AUDIO_PAD).ids) == 1


def test_missing_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="ingest the dataset first"):
        list(corpus_texts(tmp_path))
