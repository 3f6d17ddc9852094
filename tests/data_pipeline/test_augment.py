"""Stage augmentation: one random draw per clip, shared by its frames."""

import torch

from data_pipeline.augment import AugmentationSpec, augment_batch, build_augmentation


def test_identity_spec_builds_nothing_and_leaves_frames_alone():
    frames = torch.rand(2, 3, 3, 8, 8)
    assert build_augmentation(AugmentationSpec()) is None
    assert augment_batch(frames, None) is frames


def test_one_draw_per_clip_applies_to_every_frame():
    torch.manual_seed(0)
    base = torch.rand(1, 1, 3, 16, 16)
    frames = base.repeat(8, 4, 1, 1, 1)  # 8 clips of 4 identical frames
    out = augment_batch(frames, build_augmentation(AugmentationSpec(rotation=20, brightness=0.3, hflip=True)))
    assert out.shape == frames.shape and out.min() >= 0 and out.max() <= 1
    for clip in out:  # identical frames stay identical: the parameters were drawn once per clip
        assert torch.allclose(clip, clip[:1].expand_as(clip))
    assert not all(torch.allclose(out[0], c) for c in out[1:])  # clips get different draws
