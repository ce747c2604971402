"""The omni model: the LLM plus the vision encoder, the audio encoder and the audio-token interface.

Input embedding at each position = text embedding + the embeddings of its 4 audio codes (summed; code
-1 means none), then ViT and audio-encoder features replace the `<|vision_pad|>` / `<|audio_pad|>`
placeholders in order (see `model.layout`). Output = the text head plus 4 audio heads; audio targets use
`offset_audio_codes`, which puts the acoustic codes one step after their semantic code.

The assembled embeddings enter megatron's GPTModel as its `decoder_input` (the first pipeline stage
builds them over the full sequence, then scatters them to the sequence-parallel region); the last stage
computes the losses (vocab-parallel cross entropy for the text and the column-parallel audio heads).
Tensor (with sequence), expert and pipeline parallelism come from megatron; the encoders are plain
modules replicated over tensor parallel. Context parallelism (model.context_parallel): the input is
assembled over the whole sequence on every CP rank, then each keeps its load-balanced share of the
positions; the last stage cuts the targets the same way, so each CP rank's loss terms are sums over its
positions and add up over CP like over data parallel.

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

from dataclasses import dataclass, fields

import torch
from torch import nn

from model.audio_encoder import StreamingAudioEncoder
from model.codec import AudioCodec
from model.config import ModelPreset
from model.context_parallel import gather_sequence, split_sequence, sum_gradient
from model.distributed import ParallelSizes
from model.llm.model import build_llm
from model.vit import LongCatViT, VisualInput

IGNORE = -100
# Classes of text targets (values of OmniBatch.loss_classes): the loss each text label belongs to.
TEXT_LOSS_CLASSES = ("text", "audio_text", "vision")
# Losses computed from an encoder alone: a pass that wants only these skips the LLM forward.
ENCODER_LOSSES = frozenset({"ctc"})
# How the audio encoder's output enters the LLM (`OmniModel(audio_input=...)`, a stage's `speech_input`):
# "projector": its hidden states through the MLP projector (REFERENCE.md section 4); "ctc_posteriors": its
# CTC head's posteriors over the tokenizer, compressed per second to its best path's tokens (blank dropped),
# times the LLM's input embedding table, so speech arrives as a soft mix of the tokens it spells. Measured on
# the tiny preset (README, "What was measured"): the projector path learns the training voices only; the
# posterior path is what reaches unseen voices.
AUDIO_INPUTS = ("projector", "ctc_posteriors")

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

    def to(self, device: torch.device) -> OmniBatch:
        """The same batch with every tensor on `device` (the model's: batches are built on the CPU)."""

        def move(value):
            if isinstance(value, torch.Tensor):
                return value.to(device)
            if isinstance(value, VisualInput):
                return VisualInput(value.pixels.to(device))
            if isinstance(value, list):
                return [move(v) for v in value]
            return value

        return OmniBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})


def document_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, S, S] megatron attention mask (True = masked): causal and within one packed document.

    Without it a caption packed after ten other images could attend to all eleven images' tokens and the
    model cannot tell which one it describes. (On GPUs with Transformer Engine the same is expressed as
    packed-sequence cu_seqlens; this dense form is the CPU path.)
    """
    s = document_ids.shape[1]
    same = document_ids[:, :, None] == document_ids[:, None, :]
    causal = torch.ones(s, s, dtype=torch.bool, device=document_ids.device).tril()
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
    sums = torch.zeros(size, dtype=per_token.dtype, device=per_token.device).index_add(0, index, per_token * counted)
    counts = torch.zeros_like(sums).index_add(0, index, counted.to(per_token.dtype))
    present = counts > 0
    return (sums[present] / counts[present]).sum(), present.sum().to(per_token.dtype)


def text_target_weights(batch: OmniBatch) -> dict[str, torch.Tensor]:
    """[B, S] float64 weight of each text target in its class's loss sum (0 elsewhere).

    1 per target without document ids; with them 1 / (targets of that class in its packed sample), so the
    weighted sum is the sum over samples of each sample's mean (`sample_balanced_loss`) while remaining a
    plain sum over positions: any split of the positions (context parallel) adds up to the same total.
    Computed from the whole sequence, before a split."""
    weights = {}
    for name, mask in _text_targets(batch).items():
        mask = mask.double()
        if batch.document_ids is not None:
            docs = batch.document_ids.flatten().clamp(min=0)
            per_doc = torch.zeros(int(docs.max()) + 1, dtype=torch.float64, device=docs.device).index_add(0, docs, mask)
            mask = mask / per_doc[docs].clamp(min=1)
        weights[name] = mask.view(batch.labels.shape)
    return weights


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
            per_doc = torch.zeros(int(docs.max()) + 1, dtype=torch.float64, device=docs.device)
            per_doc = per_doc.index_add(0, docs, mask.double())
            counts[name] = (per_doc > 0).sum().double()
    if batch.audio_labels is not None:
        for i in range(batch.audio_labels.shape[-1]):
            counts[f"audio_book{i}"] = (batch.audio_labels[..., i] != IGNORE).sum().double()
    if batch.first_audio is not None:
        counts["first_audio_token"] = batch.first_audio.sum().double()
    return counts


class OmniModel(nn.Module):
    """The LLM (a megatron GPTModel) with the encoders and audio interface around it, at any TP/EP/PP layout.

    The first pipeline stage holds the encoders and audio-code embeddings and assembles the input over the
    full sequence (`embed`); the last holds the audio heads and computes every per-token loss from the
    decoder's hidden states and the text logits (`_loss_terms`). Middle stages run decoder layers only.
    """

    def __init__(self, preset: ModelPreset, vision_pad_id: int, audio_pad_id: int,
                 parallel: ParallelSizes = ParallelSizes(), params_dtype: torch.dtype = torch.float32,
                 audio_input: str = "projector"):  # fmt: skip
        """`params_dtype` bfloat16: the LLM (and its audio heads) is built for bf16 mixed precision (megatron's
        config bf16=True); the trainer then wraps it in megatron's Float16Module
        (components.training.precision). Evaluation builds fp32 models and loads any checkpoint into them.
        `audio_input`: one of AUDIO_INPUTS (the same weights serve both; checkpoints record which one trained)."""
        super().__init__()
        if audio_input not in AUDIO_INPUTS:
            raise ValueError(f"audio_input {audio_input!r} is not one of {AUDIO_INPUTS}")
        if audio_input == "ctc_posteriors" and preset.audio_encoder.ctc_vocab_size != preset.llm.vocab_size:
            raise ValueError(f"preset {preset.name!r}: audio_input 'ctc_posteriors' mixes the LLM's token embeddings "
                             f"by the CTC head's posteriors, so audio_encoder.ctc_vocab_size "
                             f"({preset.audio_encoder.ctc_vocab_size}) must equal llm.vocab_size "
                             f"({preset.llm.vocab_size}); use speech_input 'encoder'")  # fmt: skip
        self.audio_input = audio_input
        from megatron.core import parallel_state
        from megatron.core.tensor_parallel import ColumnParallelLinear

        sizes = preset.codec.codebook_sizes
        heads = {"llm.vocab_size": preset.llm.vocab_size, **{f"codec codebook {i}": n for i, n in enumerate(sizes)}}
        for what, size in heads.items():
            if size % parallel.tensor:
                raise ValueError(f"preset {preset.name!r}: {what} ({size}) is not divisible by parallel.tensor "
                                 f"{parallel.tensor} (vocab-parallel heads); change parallel.tensor")  # fmt: skip
        self.preset = preset
        self.vision_pad_id, self.audio_pad_id = vision_pad_id, audio_pad_id
        self.cp_group = parallel_state.get_context_parallel_group()
        self.cp, self.cp_rank = self.cp_group.size(), self.cp_group.rank()
        self.first_stage = parallel_state.is_pipeline_first_stage()
        self.last_stage = parallel_state.is_pipeline_last_stage()
        self.llm = build_llm(preset.llm, parallel, pre_process=self.first_stage, post_process=self.last_stage,
                             params_dtype=params_dtype)  # fmt: skip
        self.model_type = self.llm.model_type  # megatron's schedules read it from the model they run
        # megatron's finalize_model_grads reads these from the outermost model holding them (for tied
        # embeddings across pipeline stages; the omni model's are untied, as the LLM's).
        self.pre_process, self.post_process = self.first_stage, self.last_stage
        self.share_embeddings_and_output_weights = self.llm.share_embeddings_and_output_weights
        hidden, config = preset.llm.hidden_size, self.llm.config
        # Modules a stage does not run are not built (None): no memory, no gradient buffer, no checkpoint key.
        self.vit = self.audio_encoder = self.audio_embeddings = self.audio_heads = None
        if self.first_stage:
            # The text embedding is all-reduced over TP (full sequence on every TP rank) instead of
            # reduce-scattered: encoder features replace placeholders anywhere in the sequence, then
            # `embed` scatters the assembled input to the sequence-parallel region itself.
            self.llm.embedding.word_embeddings.reduce_scatter_embeddings = False
            self.vit = LongCatViT(preset.vit)
            self.audio_encoder = StreamingAudioEncoder(preset.audio_encoder)
            self.audio_embeddings = nn.ModuleList(nn.Embedding(size, hidden) for size in sizes)
        if self.last_stage:
            # Column-parallel like the text head: each TP rank holds a slice of every codebook's logits and
            # the cross entropy is vocab-parallel, so no rank materialises full audio logits.
            self.audio_heads = nn.ModuleList(
                ColumnParallelLinear(hidden, size, config=config, init_method=config.init_method, bias=False,
                                     gather_output=False)  # fmt: skip
                for size in sizes
            )
            # GPTModel returns the text logits only; the audio heads read the final hidden states, kept here.
            self.llm.decoder.register_forward_hook(self._keep_hidden)
        self._hidden: torch.Tensor | None = None
        # Carried in every checkpoint (on every pipeline stage: each renders the codes of its batches) so later
        # stages encode speech, and decode speech output, with the codec its own stage trained
        # (components.training.codec_stage); never part of the LLM's graph.
        self.codec = AudioCodec(preset.codec)

    def _keep_hidden(self, module, inputs, output) -> None:
        self._hidden = output

    def embed(self, batch: OmniBatch, audio: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings in megatron's layout: [S, B, H], or [S/TP, B, H] under sequence parallelism.
        `audio`: the audio placeholders' features, already encoded (`encode_audio`), instead of encoding
        `batch.audio_features`: a stream prefilled a second at a time (model.incremental) encodes its
        audio with the context on both sides of that second, as the whole clip is encoded in training."""
        from megatron.core.tensor_parallel import scatter_to_sequence_parallel_region

        emb = self.llm.embedding.word_embeddings(batch.input_ids).transpose(0, 1)  # [S, B, H], full on each TP rank
        if batch.audio_codes is not None:
            codes = batch.audio_codes.transpose(0, 1)  # [S, B, 4]
            for i, table in enumerate(self.audio_embeddings):
                present = codes[..., i] >= 0
                emb = emb + table(codes[..., i].clamp(min=0)) * present[..., None]
        emb = self._scatter(emb, batch.input_ids, self.vision_pad_id, self._bridged(self._vision_features(batch)),
                            "vision")  # fmt: skip
        audio = self._audio_features(batch) if audio is None else audio
        emb = self._scatter(emb, batch.input_ids, self.audio_pad_id, audio, "audio")
        if self.cp > 1:  # this CP rank's positions; backward: gradients at those positions only
            emb = split_sequence(emb, 0, self.cp, self.cp_rank)
        emb = emb.contiguous()  # [B, S, H] transposed above; megatron's layers view it as [S * B, H]
        if self.llm.config.sequence_parallel:  # forward: this rank's slice; backward: all-gather (exact)
            emb = scatter_to_sequence_parallel_region(emb)
        return emb

    # Set by model.encoder_parallel.shard_encoders: the encoders are FSDP-sharded and the batch's inputs
    # are encoded through this model.modality_bridge.ModalityBridge (split over the ranks sharing a batch).
    encoder_bridge = None

    def _bridged(self, features: torch.Tensor | None) -> torch.Tensor | None:
        """Features from the sharded encoders under CP: each CP rank backpropagates only its positions, the
        bridge's gather expects every rank of its group to hold the whole features' gradient: sum over CP.
        (Encoders inside megatron's DDP need no sum: DDP adds their gradients over the CP ranks.)"""
        if features is None or self.encoder_bridge is None or self.cp == 1:
            return features
        return sum_gradient(features, self.cp_group)

    def _vision_features(self, batch: OmniBatch) -> torch.Tensor | None:
        # The same input object repeated (rows of one prompt with different answers) is encoded once.
        unique = list({id(v): v for v in batch.visuals or []}.values())
        if self.encoder_bridge is not None:  # runs on every rank, even with nothing to encode (FSDP)
            encoded = self.encoder_bridge.encode(unique, self.vit, self._vision_probe)
        elif unique:
            encoded = self.vit(unique)
        else:
            return None
        return self._in_batch_order(unique, encoded, batch.visuals)

    def encode_audio(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        """LLM-width features [steps, hidden] of each spliced-fbank clip, on the audio path this model reads
        (`audio_input`), without the sharded encoders' bridge (one process: evaluation and serving)."""
        if self.audio_input == "ctc_posteriors":
            return [self._embed_posteriors(p) for p in self.audio_encoder.encode_clips(clips, ctc_posteriors=True)]
        return [self.audio_encoder.to_llm(hidden) for hidden in self.audio_encoder.encode_clips(clips)]

    def _audio_features(self, batch: OmniBatch) -> torch.Tensor | None:
        unique = list({id(f): f for f in batch.audio_features or []}.values())
        posteriors = self.audio_input == "ctc_posteriors"

        def encode(clips: list[torch.Tensor]) -> list[torch.Tensor]:
            encoded = self.audio_encoder.encode_clips(clips, ctc_posteriors=posteriors)
            return encoded if posteriors else [self.audio_encoder.to_llm(hidden) for hidden in encoded]

        if self.encoder_bridge is not None:
            encoded = self.encoder_bridge.encode(unique, encode, self._audio_probe)
        elif unique:
            encoded = encode(unique)
        else:
            return None
        # bridged before the embedding mix: under CP the table is in megatron's DDP, which sums its gradient
        # over the CP ranks itself (summing the mixed features' gradient first would count it twice)
        features = self._bridged(self._in_batch_order(unique, encoded, batch.audio_features))
        return self._embed_posteriors(features) if posteriors else features

    def _embed_posteriors(self, posteriors: torch.Tensor) -> torch.Tensor:
        """[steps, vocab] posteriors -> [steps, hidden]: their mix of the LLM's input embeddings. Under tensor
        parallelism each rank holds a vocabulary slice of the table, as a row-parallel layer holds a slice of
        its input: the partial products are all-reduced forward (backward: the identity, every rank holds the
        same output gradient, as for the text embedding), and the posteriors' gradient, which each rank has
        for its slice only, is all-reduced backward, so the encoder (and the bridge's gather, which expects
        the same full gradient on every rank) sees all of it."""
        from megatron.core import parallel_state
        from megatron.core.tensor_parallel import (
            copy_to_tensor_model_parallel_region,
            reduce_from_tensor_model_parallel_region,
        )

        table = self.llm.embedding.word_embeddings
        split = parallel_state.get_tensor_model_parallel_world_size() > 1
        if split:
            posteriors = copy_to_tensor_model_parallel_region(posteriors)
        mixed = posteriors[:, table.vocab_start_index : table.vocab_end_index].to(table.weight.dtype) @ table.weight
        return reduce_from_tensor_model_parallel_region(mixed) if split else mixed

    @staticmethod
    def _in_batch_order(unique: list, encoded: list[torch.Tensor], items: list | None) -> torch.Tensor:
        if not unique:
            return encoded[0]  # zero rows from the sharded encoders' probe (see ModalityBridge.encode)
        features = dict(zip(map(id, unique), encoded))
        return torch.cat([features[id(item)] for item in items])

    def _vision_probe(self) -> list[VisualInput]:
        side = self.preset.vit.patch_size * self.preset.vit.merge
        return [VisualInput(torch.zeros(self.preset.vit.in_channels, side, side, device=self._device()))]

    def _audio_probe(self) -> list[torch.Tensor]:
        cfg = self.preset.audio_encoder
        return [torch.zeros(1, cfg.splice * cfg.num_mel_bins, device=self._device())]

    def _device(self) -> torch.device:
        return next(self.llm.parameters()).device  # every pipeline stage holds decoder layers

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
        # contiguous: megatron's MoE router views its input flat, which a [S, B>1, H] transpose cannot give
        return flat.view(emb.shape[1], emb.shape[0], -1).transpose(0, 1).contiguous()

    def _attention_mask(self, batch: OmniBatch) -> torch.Tensor | None:
        """The document mask (None: plain causal); under CP the rows of this rank's query positions."""
        from model.llm.mla import MLACoreAttention
        from model.llm.spec import core_attention_class

        if self.cp == 1:
            return document_mask(batch.document_ids) if batch.document_ids is not None else None
        if not issubclass(core_attention_class(), MLACoreAttention):
            if batch.document_ids is not None:  # TE's CP attention takes causal masks; packing needs THD
                raise ValueError("packed sequences (document ids) with parallel.context > 1 on Transformer Engine "
                                 "attention need the THD format (cu_seqlens per document), which is not built: "
                                 "set parallel.context to 1 or train without packing")  # fmt: skip
            return None
        ids = batch.document_ids
        if ids is None:  # causal = one document
            ids = torch.zeros_like(batch.input_ids)
        return split_sequence(document_mask(ids), 2, self.cp, self.cp_rank)

    def _run_llm(self, batch: OmniBatch) -> torch.Tensor:
        """Through GPTModel: [B, S/CP, vocab/TP] text logits on the last stage, hidden states elsewhere."""
        decoder_input = self.embed(batch) if self.first_stage else None  # later stages: set_input_tensor
        return self.llm(input_ids=None, position_ids=None, attention_mask=self._attention_mask(batch),
                        decoder_input=decoder_input)  # fmt: skip

    def _local(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """This CP rank's positions of a [B, S, ...] tensor."""
        return t if t is None or self.cp == 1 else split_sequence(t, 1, self.cp, self.cp_rank)

    def _full(self, t: torch.Tensor) -> torch.Tensor:
        """[B, S/CP, ...] of every CP rank -> [B, S, ...] in sequence order."""
        return gather_sequence(t, 1, self.cp_group)

    def text_logits(self, batch: OmniBatch) -> torch.Tensor:
        """[B, S, vocab] next-token logits of the text head (evaluation and decoding; one pipeline stage)."""
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        if not (self.first_stage and self.last_stage):
            raise ValueError("text_logits runs the whole model: load the checkpoint at pipeline size 1")
        return self._full(gather_from_tensor_model_parallel_region(self._run_llm(batch)))

    def audio_logits(self, batch: OmniBatch) -> list[torch.Tensor]:
        """[B, S, codebook size] next-step logits of each audio head (speech decoding and evaluation)."""
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        self.text_logits(batch)  # runs the model; the decoder hook keeps the final hidden states
        hidden, self._hidden = self._hidden, None
        return [self._full(gather_from_tensor_model_parallel_region(head(hidden)[0]).transpose(0, 1))
                for head in self.audio_heads]  # fmt: skip

    def set_input_tensor(self, input_tensor) -> None:
        """Megatron's schedules hand a later pipeline stage its input (the previous stage's output) here."""
        self.llm.set_input_tensor(input_tensor)

    def loss_terms(self, batch: OmniBatch,
                   losses: frozenset[str] | set[str] = DEFAULT_LOSSES) -> dict[str, torch.Tensor]:  # fmt: skip
        """Each loss as a sum whose denominator is `loss_counts(batch, losses)[name]` (the whole model: one stage).

        `losses`: the curriculum loss names wanted (components.training.losses). Only encoder losses (ctc):
        the LLM forward is skipped, and `last_text_token_losses` is None.
        Sums and counts add over micro-batches and data-parallel ranks, so a trainer divides the summed
        terms by the global batch's counts and gets the same loss and gradients at any data-parallel size.
        """
        self.last_text_token_losses = None  # per-task metrics read it; set by the LLM pass
        terms = self._loss_terms(batch, self._run_llm(batch)) if _runs_llm(losses) else {}
        return terms | self._encoder_loss_terms(batch, losses)

    def _encoder_loss_terms(self, batch: OmniBatch, losses: frozenset[str] | set[str]) -> dict[str, torch.Tensor]:
        """Losses of an encoder alone (ctc): computed where the encoder lives, the first pipeline stage."""
        transcribed = [i for i, t in enumerate(batch.ctc_targets or []) if len(t)]
        if "ctc" not in losses or not transcribed:
            return {}
        if not (self.first_stage and self.last_stage) or self.cp > 1:
            raise ValueError("the ctc loss trains the audio encoder alone: run its stage at pipeline and context "
                             "size 1")  # fmt: skip
        return {"ctc": self.audio_encoder.ctc_loss_sum([batch.audio_features[i] for i in transcribed],
                                                       [batch.ctc_targets[i] for i in transcribed])}  # fmt: skip

    def _loss_terms(self, batch: OmniBatch, text_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every per-token loss, on the last pipeline stage, from the text logits and the final hidden states.

        Logits are vocab-parallel (each TP rank holds a slice of the vocabulary for the whole sequence);
        `vocab_parallel_cross_entropy` gives every TP rank the full per-token losses. Targets of IGNORE are
        looked up as token 0 and multiplied out. Text targets split into the loss classes of the module
        docstring.
        """
        from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

        hidden, self._hidden = self._hidden, None  # [S(/CP/TP), B, H], after the final norm
        labels = self._local(batch.labels)  # this CP rank's positions (all of them without CP)
        per_token = vocab_parallel_cross_entropy(text_logits.float(), labels.clamp(min=0))  # [B, S/CP]
        per_token = per_token * (labels != IGNORE)
        terms = {name: (per_token * self._local(weight).to(per_token.dtype)).sum()
                 for name, weight in text_target_weights(batch).items()}  # fmt: skip
        # per-task metrics read this, over the whole sequence
        self.last_text_token_losses = self._full(per_token.detach()) if self.cp > 1 else per_token.detach()
        if batch.audio_labels is not None:
            audio_labels, first_audio = self._local(batch.audio_labels), self._local(batch.first_audio)
            for i, head in enumerate(self.audio_heads):
                book_logits, _ = head(hidden)  # [S/CP, B, size/TP] (sequence-parallel input gathered inside)
                targets = audio_labels[..., i].transpose(0, 1).contiguous()  # [S, B] (megatron views it flat)
                kept = targets != IGNORE
                per_code = vocab_parallel_cross_entropy(book_logits.float(), targets.clamp(min=0)) * kept  # [S, B]
                terms[f"audio_book{i}"] = per_code.sum()
                if i == 0 and first_audio is not None:
                    terms["first_audio_token"] = (per_code * first_audio.transpose(0, 1)).sum()
        return terms

    def forward(self, batch: OmniBatch, sums: bool = False, losses: frozenset[str] | set[str] = DEFAULT_LOSSES):
        """Mean losses (see `mean_losses`); `sums=True`: `loss_terms` instead.

        Before the last pipeline stage: this stage's output hidden states (megatron's schedule sends them on).
        The batch may be on the CPU: it is moved to the model's device here.
        """
        batch = batch.to(self._device())
        if not _runs_llm(losses):
            self.last_text_token_losses = None
            terms = self._encoder_loss_terms(batch, losses)
        else:
            output = self._run_llm(batch)
            if not self.last_stage:
                return output
            terms = self._loss_terms(batch, output) | self._encoder_loss_terms(batch, losses)
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
