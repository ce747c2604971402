import torch

from model.vit import LongCatViT, VisualInput, ViTConfig

TINY = ViTConfig(hidden_size=32, intermediate_size=48, num_layers=2, num_heads=2, out_hidden_size=64)


def test_native_resolution_batch_of_images_and_video():
    torch.manual_seed(0)
    vit = LongCatViT(TINY)
    image_a = VisualInput(torch.randn(3, 28, 56))  # 2x4 patches -> 4 LLM tokens
    image_b = VisualInput(torch.randn(3, 42, 28))  # 3x2 patches -> 3 LLM tokens
    video = VisualInput(torch.randn(4, 3, 28, 28))  # 2 temporal units of 2x2 patches -> 4 tokens
    out = vit([image_a, image_b, video])
    assert [o.shape for o in out] == [(4, 64), (3, 64), (4, 64)]
    sum(o.sum() for o in out).backward()
    assert vit.patch_embed.weight.grad is not None and vit.blocks[0].ls1.grad is not None


def test_images_do_not_attend_to_each_other():
    torch.manual_seed(0)
    vit = LongCatViT(TINY).eval()
    a, b = torch.randn(3, 28, 56), torch.randn(3, 42, 28)
    with torch.no_grad():
        alone = vit([VisualInput(a)])[0]
        packed = vit([VisualInput(a), VisualInput(b)])[0]
    assert torch.allclose(alone, packed, atol=1e-5)


def test_image_is_two_identical_frames():
    torch.manual_seed(0)
    vit = LongCatViT(TINY).eval()
    img = torch.randn(3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(vit([VisualInput(img)])[0], vit([VisualInput(torch.stack([img, img]))])[0], atol=1e-6)


def test_off_grid_frame_is_refused():
    import pytest

    with pytest.raises(ValueError, match="native_resolution"):
        LongCatViT(TINY)([VisualInput(torch.randn(3, 30, 30))])
