import random
from collections import Counter

import pytest

from components.training.mixture import MixtureSampler
from components.training.packing import pack_stream, pack_window, packing_efficiency


def test_packing_fills_sequences_without_splitting_samples():
    rng = random.Random(0)
    # Lengths like the demo mixture: short text/QA, mid-size audio, long video samples.
    lengths = [(i, rng.choice([rng.randint(20, 120), rng.randint(150, 400), rng.randint(500, 1500)]))
               for i in range(2000)]  # fmt: skip
    sequences = list(pack_stream(lengths, seq_length=2048, window=256))
    assert sorted(i for s in sequences for i in s.sample_ids) == list(range(2000))  # each sample exactly once
    assert all(s.used <= 2048 for s in sequences)
    assert packing_efficiency(sequences, 2048) >= 0.95


def test_packing_is_deterministic_and_refuses_oversized_samples():
    lengths = [(i, (i * 37) % 500 + 1) for i in range(300)]
    first = [s.sample_ids for s in pack_stream(lengths, 1024)]
    assert first == [s.sample_ids for s in pack_stream(lengths, 1024)]
    with pytest.raises(ValueError, match="longer than the sequence length 100"):
        pack_window([(0, 50), (1, 101)], 100)


def test_mixture_tracks_its_weights():
    keys = {"text": [f"t{i}" for i in range(50)], "asr": [f"a{i}" for i in range(7)], "video_qa": ["v0", "v1"]}
    sampler = MixtureSampler(keys, {"text": 0.5, "asr": 0.25, "video_qa": 0.25}, seed=1)
    draws = [sampler.next() for _ in range(400)]
    counts = Counter(family for family, _ in draws)
    assert counts == {"text": 200, "asr": 100, "video_qa": 100}
    assert {k for f, k in draws if f == "asr"} == set(keys["asr"])  # small families cycle through epochs


def test_mixture_resumes_to_the_same_order():
    keys = {"text": [f"t{i}" for i in range(13)], "asr": [f"a{i}" for i in range(5)]}
    weights = {"text": 0.7, "asr": 0.3}
    reference = MixtureSampler(keys, weights, seed=3)
    expected = [reference.next() for _ in range(60)]
    first = MixtureSampler(keys, weights, seed=3)
    head = [first.next() for _ in range(25)]
    resumed = MixtureSampler(keys, weights, seed=3)
    resumed.load_state_dict(first.state_dict())
    assert head + [resumed.next() for _ in range(35)] == expected
    with pytest.raises(ValueError, match="another seed"):
        MixtureSampler(keys, weights, seed=4).load_state_dict(first.state_dict())


def test_each_epoch_walks_the_seeded_permutation_even_after_a_rewind():
    """The sampler shuffles a family once per epoch; the order is still exactly the documented one
    (`random.Random(f"{seed}:{family}:{epoch}")` over the sorted keys), across epochs and after a state
    load that goes back to an earlier epoch on a sampler that already drew from later ones."""
    keys = {"text": [f"t{i}" for i in range(7)], "asr": [f"a{i}" for i in range(3)]}
    weights = {"text": 0.6, "asr": 0.4}

    def documented(family: str, position: int) -> str:
        order = sorted(keys[family])
        epoch, index = divmod(position, len(order))
        random.Random(f"5:{family}:{epoch}").shuffle(order)
        return order[index]

    sampler = MixtureSampler(keys, weights, seed=5)
    start = sampler.state_dict()
    seen = Counter()
    for _ in range(40):  # several epochs of both families
        family, key = sampler.next()
        assert key == documented(family, seen[family])
        seen[family] += 1
    sampler.load_state_dict(start)  # back to epoch 0 with later epochs cached
    fresh = MixtureSampler(keys, weights, seed=5)
    assert [sampler.next() for _ in range(10)] == [fresh.next() for _ in range(10)]


def test_mixture_with_a_family_that_has_no_samples_fails_clearly():
    with pytest.raises(ValueError, match=r"no samples: \['av_qa'\]"):
        MixtureSampler({"text": ["t"]}, {"text": 0.5, "av_qa": 0.5}, seed=0)


def test_carry_over_packer_fills_sequences_drops_nothing_and_resumes():
    import random

    from components.training.packing import CarryOverPacker

    rng = random.Random(0)
    stream = [(f"k{i}", rng.choice([30, 200, 450, 700, 1000])) for i in range(4000)]
    lengths = dict(stream)

    def run(packer, position, count):
        def draw():
            nonlocal position
            position += 1
            return stream[position - 1]

        return [packer.next(draw) for _ in range(count)], position

    packer = CarryOverPacker(1024)
    first, position = run(packer, 0, 60)
    fills = [sum(lengths[k] for k in seq) / 1024 for seq in first]
    assert sum(fills) / len(fills) >= 0.95 and max(fills) <= 1.0
    emitted = [k for seq in first for k in seq]
    assert len(emitted) == len(set(emitted))  # no sample twice
    drawn = {k for k, _ in stream[:position]}
    assert drawn == set(emitted) | {k for k, _ in packer.pending} | {k for r in packer.ready for k in r}  # none lost
    state = packer.state_dict()
    straight, _ = run(packer, position, 20)
    restored = CarryOverPacker(1024)
    restored.load_state_dict(state)
    assert run(restored, position, 20)[0] == straight
