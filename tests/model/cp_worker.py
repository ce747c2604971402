"""Run by test_context_parallel.py under torchrun: OmniModel loss sums and gradients at parallel.context = N.

Every rank builds the tiny omni model (rank 0 of the CP=1 run writes the initial weights with `--save-init`,
the CP run loads them), runs `loss_terms` on one fixed batch (text with loss classes, audio codes and
codebook targets, first-audio marks; one causal sequence per row: packed documents under CP are compared
by run_stage's `cp2` layout), backpropagates the sum of the terms and sums the loss terms and gradients
over the CP group (megatron DDP's reduction over data x context parallel). Writes RESULT.rankN.pt: terms, gradients, the
gathered per-token text losses. On CUDA the model runs in bf16 (Transformer Engine's CP attention).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def fixed_batch(vocab: int, sizes: tuple[int, ...], device):
    from model.omni import IGNORE, OmniBatch

    g = torch.Generator().manual_seed(7)
    b, s = 2, 64
    ids = torch.randint(4, vocab - 8, (b, s), generator=g)
    labels = torch.roll(ids, -1, 1)
    labels[torch.rand(b, s, generator=g) < 0.3] = IGNORE
    classes = torch.randint(0, 3, (b, s), generator=g)
    codes = torch.full((b, s, len(sizes)), -1)
    targets = torch.full((b, s, len(sizes)), IGNORE)
    for i, size in enumerate(sizes):
        codes[:, 20:40, i] = torch.randint(0, size, (b, 20), generator=g)
        targets[:, 19:39, i] = codes[:, 20:40, i]
    first = torch.zeros(b, s, dtype=torch.bool)
    first[:, 19] = True
    to = (lambda t: t.to(device)) if device.type == "cuda" else (lambda t: t)
    return OmniBatch(input_ids=to(ids), labels=to(labels), audio_codes=to(codes), audio_labels=to(targets),
                     loss_classes=to(classes), first_audio=to(first))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--init", type=Path, required=True)
    parser.add_argument("--cp", type=int, default=1)
    parser.add_argument("--save-init", action="store_true")
    args = parser.parse_args()

    from megatron.core import parallel_state

    from model.config import get_preset
    from model.distributed import ParallelSizes, init_parallel
    from model.omni import OmniModel

    sizes = ParallelSizes(context=args.cp)
    init_parallel(sizes, seed=1234)
    preset = get_preset("tiny")
    torch.manual_seed(0)
    vocab = preset.llm.vocab_size
    model = OmniModel(preset, vision_pad_id=vocab - 1, audio_pad_id=vocab - 2, parallel=sizes)
    if args.save_init:
        torch.save(model.state_dict(), args.init)
    model.load_state_dict(torch.load(args.init, weights_only=False))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        model = model.cuda().bfloat16()
    batch = fixed_batch(vocab, preset.codec.codebook_sizes, device)
    terms = model.loss_terms(batch, {"text", "audio"})
    sum(terms.values()).backward()
    group = parallel_state.get_context_parallel_group()
    names = sorted(terms)
    summed = torch.stack([terms[n].detach().double() for n in names])
    torch.distributed.all_reduce(summed, group=group)
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            grad = p.grad.float().contiguous()
            torch.distributed.all_reduce(grad, group=group)
            grads[name] = grad.cpu()
    record = {"terms": dict(zip(names, summed.tolist())), "grads": grads,
              "token_losses": model.last_text_token_losses.float().cpu()}  # fmt: skip
    torch.save(record, f"{args.result}.rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    main()
