"""The omni model: the LLM plus the vision encoder, the audio encoder and the audio-token interface.

Input embedding at each position = text embedding + the embeddings of its 4 audio codes (summed; code
-1 means none), then ViT and audio-encoder features replace the `<|vision_pad|>` / `<|audio_pad|>`
placeholders in order (see `model.layout`). Output = the text head plus 4 audio heads; audio targets use
`offset_audio_codes`, which puts the acoustic codes one step after their semantic code.

The LLM's decoder is called directly with the assembled embeddings, so this assembly runs with
pipeline size 1; the encoders are plain modules (sharded with FSDP2 on clusters).

Losses (REFERENCE.md section 6) partition the targets explicitly; each is a sum over its targets with its
own denominator (`loss_terms` / `loss_counts`, `mean_losses` divides):

| loss | targets | where it comes from |
|---|---|---|
| text | text labels of class `text` (text-only samples) | `OmniBatch.loss_classes` == 0 (or no classes) |
| audio_text | text labels conditioned on speech input (ASR transcripts, voice_qa answers) | loss_classes == 1 |
| vision | text labels conditioned on images / video (captions, video and av QA answers) | loss_classes == 2 |
| audio | codebook labels: `audio_semantic` (book 0) + `audio_acoustic` (mean of books 1-3) | `audio_labels` |
| first_audio_token | the semantic label of each speech response's first frame (also in `audio`) | `first_audio` |

The renderer (components.training.render) decides each sample's class; text and the two conditioned
classes are balanced per packed sample (`sample_balanced_loss`), codebook losses are token means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.audio_encoder import StreamingAudioEncoder
from model.codec import AudioCodec
from model.config import ModelPreset
from model.distributed import ParallelSizes
from model.llm.model import build_llm
from model.vit import LongCatViT, VisualInput

IGNORE = -100
# Classes of text targets (values of OmniBatch.loss_classes): the loss each text label belongs to.
TEXT_LOSS_CLASSES = ("text", "audio_text", "vision")
# Losses computed from an encoder alone: a pass that wants only these skips the LLM forward.
ENCODER_LOSSES = frozenset({"ctc"})
# What `loss_terms` computes when not told: the LLM's losses (text classes, audio codebooks).
DEFAULT_LOSSES = frozenset({"text", "audio"})


def _runs_llm(losses: frozenset[str] | set[str]) -> bool:
    return bool(set(losses) - ENCODER_LOSSES)


def offset_audio_codes(codes: torch.Tensor) -> torch.Tensor:
    """[B, S, 4] -> the same with codebooks 1-3 delayed one position (semantic leads, acoustic follows)."""
    shifted = codes.clone()
    shifted[:, 1:, 1:] = codes[:, :-1, 1:]
    shifted[:, 0, 1:] = -1
    return shifted


@dataclass
class OmniBatch:
    input_ids: torch.Tensor  # [B, S]
    labels: torch.Tensor  # [B, S] next text token or IGNORE
    audio_codes: torch.Tensor | None = None  # [B, S, 4] input codes (already offset), -1 = none
    audio_labels: torch.Tensor | None = None  # [B, S, 4] next-step codes, IGNORE where none
    visuals: list[VisualInput] | None = None  # in placeholder order
    audio_features: list[torch.Tensor] | None = None  # spliced fbank [steps, 640] per clip, in order
    document_ids: torch.Tensor | None = None  # [B, S] packed-sample index; attention stays inside a sample
    loss_classes: torch.Tensor | None = None  # [B, S] index into TEXT_LOSS_CLASSES per text label; None = text
    first_audio: torch.Tensor | None = None  # [B, S] True where audio_labels[..., 0] opens a speech response
    ctc_targets: list[torch.Tensor] | None = None  # per audio_features clip: transcript token ids, empty = none


def document_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, S, S] megatron attention mask (True = masked): causal and within one packed document.

    Without it a caption packed after ten other images could attend to all eleven images' tokens and the
    model cannot tell which one it describes. (On GPUs with Transformer Engine the same is expressed as
    packed-sequence cu_seqlens; this dense form is the CPU path.)
    """
    s = document_ids.shape[1]
    same = document_ids[:, :, None] == document_ids[:, None, :]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    return ~(same & causal)[:, None]


def sample_balanced_loss(per_token: torch.Tensor, counted: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """Mean over packed samples of each sample's mean token loss.

    A plain token mean lets a long text document outweigh the short answer of a QA or caption sample
    packed beside it 10:1, which starves the short, multimodal targets of gradient (measured: a tiny
    model learns image colours from captions ~3x slower with 20% text in the mix).
    """
    total, samples = _sample_balanced_terms(per_token, counted, documents)
    return total / samples.clamp(min=1)


def _sample_balanced_terms(per_token, counted, documents) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over samples of each sample's mean token loss, number of samples with a target)."""
    index = documents.clamp(min=0)
    size = int(index.max()) + 1
    sums = torch.zeros(size, dtype=per_token.dtype).index_add(0, index, per_token * counted)
    counts = torch.zeros(size, dtype=per_token.dtype).index_add(0, index, counted.to(per_token.dtype))
    present = counts > 0
    return (sums[present] / counts[present]).sum(), present.sum().to(per_token.dtype)


def _text_targets(batch: OmniBatch) -> dict[str, torch.Tensor]:
    """Flat boolean masks of the text targets of each class present in the batch's partition."""
    counted = batch.labels.flatten() != IGNORE
    if batch.loss_classes is None:
        return {"text": counted}
    classes = batch.loss_classes.flatten()
    return {name: counted & (classes == i) for i, name in enumerate(TEXT_LOSS_CLASSES)}


def loss_names(num_codebooks: int) -> list[str]:
    """Every term `loss_terms` may return, in a fixed order (ranks all-reduce them by position)."""
    return [*TEXT_LOSS_CLASSES, *(f"audio_book{i}" for i in range(num_codebooks)), "first_audio_token", "ctc"]


def loss_counts(batch: OmniBatch, losses: frozenset[str] | set[str] = DEFAULT_LOSSES) -> dict[str, torch.Tensor]:
    """The denominators of `OmniModel.loss_terms(batch, losses)`, from the labels alone (known before the forward).

    text / audio_text / vision: packed samples with a target of that class (sample-balanced, see
    `sample_balanced_loss`), or target tokens without document ids; audio_book{i}: target tokens of
    codebook i; first_audio_token: speech responses; ctc: transcript tokens.
    """
    counts = {}
    transcript_tokens = sum(len(t) for t in batch.ctc_targets or [])
    if "ctc" in losses and transcript_tokens:
        counts["ctc"] = torch.tensor(float(transcript_tokens), dtype=torch.float64)
    return {**_llm_loss_counts(batch), **counts} if _runs_llm(losses) else counts


def _llm_loss_counts(batch: OmniBatch) -> dict[str, torch.Tensor]:
    counts = {}
    for name, mask in _text_targets(batch).items():
        if batch.document_ids is None:
            counts[name] = mask.sum().double()
        else:
            docs = batch.document_ids.flatten().clamp(min=0)
            per_doc = torch.zeros(int(docs.max()) + 1, dtype=torch.float64).index_add(0, docs, mask.double())
            counts[name] = (per_doc > 0).sum().double()
    if batch.audio_labels is not None:
        for i in range(batch.audio_labels.shape[-1]):
            counts[f"audio_book{i}"] = (batch.audio_labels[..., i] != IGNORE).sum().double()
    if batch.first_audio is not None:
        counts["first_audio_token"] = batch.first_audio.sum().double()
    return counts


class OmniModel(nn.Module):
    def __init__(self, preset: ModelPreset, vision_pad_id: int, audio_pad_id: int,
                 parallel: ParallelSizes = ParallelSizes()):  # fmt: skip
        super().__init__()
        if parallel.pipeline != 1:
            raise ValueError("OmniModel assembles embeddings itself: use pipeline size 1 (see module docstring)")
        self.preset = preset
        self.vision_pad_id, self.audio_pad_id = vision_pad_id, audio_pad_id
        self.llm = build_llm(preset.llm, parallel)
        self.model_type = self.llm.model_type  # megatron's schedules read it from the model they run
        self.vit = LongCatViT(preset.vit)
        self.audio_encoder = StreamingAudioEncoder(preset.audio_encoder)
        hidden = preset.llm.hidden_size
        sizes = preset.codec.codebook_sizes
        self.audio_embeddings = nn.ModuleList(nn.Embedding(size, hidden) for size in sizes)
        self.audio_heads = nn.ModuleList(nn.Linear(hidden, size, bias=False) for size in sizes)
        # Carried in every checkpoint so later stages encode speech (and decode speech output) with the
        # codec its own stage trained (components.training.codec_stage); never part of the LLM's graph.
        self.codec = AudioCodec(preset.codec)

    def embed(self, batch: OmniBatch) -> torch.Tensor:
        """[S, B, H] input embeddings (megatron's sequence-first layout)."""
        b, s = batch.input_ids.shape
        positions = torch.arange(s)[None].expand(b, -1)
        emb = self.llm.embedding(input_ids=batch.input_ids, position_ids=positions)  # [S, B, H]
        if batch.audio_codes is not None:
            codes = batch.audio_codes.transpose(0, 1)  # [S, B, 4]
            for i, table in enumerate(self.audio_embeddings):
                present = codes[..., i] >= 0
                emb = emb + table(codes[..., i].clamp(min=0)) * present[..., None]
        emb = self._scatter(emb, batch.input_ids, self.vision_pad_id, self._vision_features(batch), "vision")
        return self._scatter(emb, batch.input_ids, self.audio_pad_id, self._audio_features(batch), "audio")

    def _vision_features(self, batch: OmniBatch) -> torch.Tensor | None:
        if not batch.visuals:
            return None
        # The same input object repeated (rows of one prompt with different answers) is encoded once.
        unique = list({id(v): v for v in batch.visuals}.values())
        features = dict(zip(map(id, unique), self.vit(unique)))
        return torch.cat([features[id(v)] for v in batch.visuals])

    def _audio_features(self, batch: OmniBatch) -> torch.Tensor | None:
        if not batch.audio_features:
            return None
        unique = list({id(f): f for f in batch.audio_features}.values())
        features = {id(f): self.audio_encoder.to_llm(self.audio_encoder(f[None]))[0] for f in unique}
        return torch.cat([features[id(f)] for f in batch.audio_features])

    @staticmethod
    def _scatter(emb, input_ids, pad_id, features, what):
        mask = (input_ids == pad_id).transpose(0, 1)  # [S, B]
        count = int(mask.sum())
        if features is None and count == 0:
            return emb
        if features is None or features.shape[0] != count:
            got = 0 if features is None else features.shape[0]
            raise ValueError(f"{count} {what} placeholders but {got} {what} feature vectors")
        # Fill in batch-major order (sample by sample), matching how placeholders were written.
        order = mask.transpose(0, 1).reshape(-1).nonzero().squeeze(-1)
        flat = emb.transpose(0, 1).reshape(-1, emb.shape[-1]).clone()
        flat[order] = features.to(flat.dtype)
        return flat.view(emb.shape[1], emb.shape[0], -1).transpose(0, 1)

    def _decode(self, batch: OmniBatch) -> torch.Tensor:
        mask = document_mask(batch.document_ids) if batch.document_ids is not None else None
        return self.llm.decoder(hidden_states=self.embed(batch), attention_mask=mask)  # [S, B, H]

    def text_logits(self, batch: OmniBatch) -> torch.Tensor:
        """[B, S, vocab] next-token logits of the text head (evaluation and decoding)."""
        return self.llm.output_layer(self._decode(batch))[0].transpose(0, 1)

    def audio_logits(self, batch: OmniBatch) -> list[torch.Tensor]:
        """[B, S, codebook size] next-step logits of each audio head (speech decoding and evaluation)."""
        hidden = self._decode(batch).transpose(0, 1)
        return [head(hidden) for head in self.audio_heads]

    def set_input_tensor(self, input_tensor) -> None:
        """Megatron's schedules call this on every model; the omni model runs as one pipeline stage."""
        self.llm.set_input_tensor(input_tensor)

    def loss_terms(self, batch: OmniBatch,
                   losses: frozenset[str] | set[str] = DEFAULT_LOSSES) -> dict[str, torch.Tensor]:  # fmt: skip
        """Each loss as a sum whose denominator is `loss_counts(batch, losses)[name]`.

        `losses`: the curriculum loss names wanted (components.training.losses). Only encoder losses (ctc):
        the LLM forward is skipped, and `last_text_token_losses` is None.
        Sums and counts add over micro-batches and data-parallel ranks, so a trainer divides the summed
        terms by the global batch's counts and gets the same loss and gradients at any data-parallel size.
        """
        self.last_text_token_losses = None  # per-task metrics read it; set by the LLM pass
        terms = self._llm_loss_terms(batch) if _runs_llm(losses) else {}
        transcribed = [i for i, t in enumerate(batch.ctc_targets or []) if len(t)]
        if "ctc" in losses and transcribed:
            terms["ctc"] = self.audio_encoder.ctc_loss_sum([batch.audio_features[i] for i in transcribed],
                                                           [batch.ctc_targets[i] for i in transcribed])  # fmt: skip
        return terms

    def _llm_loss_terms(self, batch: OmniBatch) -> dict[str, torch.Tensor]:
        hidden = self._decode(batch)
        text_logits, _ = self.llm.output_layer(hidden)
        per_token = F.cross_entropy(text_logits.transpose(0, 1).flatten(0, 1).float(), batch.labels.flatten(),
                                    ignore_index=IGNORE, reduction="none")  # fmt: skip
        terms = {}
        for name, mask in _text_targets(batch).items():
            if batch.document_ids is None:
                terms[name] = (per_token * mask).sum()
            else:
                terms[name] = _sample_balanced_terms(per_token, mask, batch.document_ids.flatten())[0]
        self.last_text_token_losses = per_token.detach().view(batch.labels.shape)  # per-task metrics read this
        if batch.audio_labels is not None:
            h = hidden.transpose(0, 1)
            for i, head in enumerate(self.audio_heads):
                per_code = F.cross_entropy(head(h).flatten(0, 1).float(), batch.audio_labels[..., i].flatten(),
                                           ignore_index=IGNORE, reduction="none")  # fmt: skip
                terms[f"audio_book{i}"] = per_code.sum()
                if i == 0 and batch.first_audio is not None:
                    terms["first_audio_token"] = (per_code * batch.first_audio.flatten()).sum()
        return terms

    def forward(self, batch: OmniBatch, sums: bool = False,
                losses: frozenset[str] | set[str] = DEFAULT_LOSSES) -> dict[str, torch.Tensor]:  # fmt: skip
        """Mean losses (see `mean_losses`); `sums=True`: `loss_terms` instead."""
        terms = self.loss_terms(batch, losses)
        return terms if sums else mean_losses(terms, loss_counts(batch, losses))


def mean_losses(terms: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Loss sums over their counts: the text classes, first_audio_token and ctc as they are, audio_semantic
    (codebook 0) and audio_acoustic (mean of the other books); each only when its terms were computed."""
    means = {name: terms[name] / counts[name].clamp(min=1).to(terms[name].dtype) for name in terms}
    losses = {name: means[name] for name in (*TEXT_LOSS_CLASSES, "first_audio_token", "ctc") if name in means}
    if "audio_book0" in means:
        losses["audio_semantic"] = means["audio_book0"]
        acoustic = [means[name] for name in sorted(means) if name.startswith("audio_book") and name != "audio_book0"]
        losses["audio_acoustic"] = torch.stack(acoustic).mean()
    return losses
