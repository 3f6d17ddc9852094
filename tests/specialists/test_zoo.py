import pytest
import torch

from specialists import (
    BranchSpec,
    SpecialistError,
    SpecialistSpec,
    create_model,
    get_spec,
    list_specialists,
    register_specialist,
)
from specialists.branches import RESIDUAL_GAIN, SpecialistModule, high_pass
from tests.helpers import TINY

# design section 2: the seed's contract numbers
CONTRACT = {
    "av": ([("lip_analyzer", 16, 5), ("motion_detector", 12, 7), ("temporal_checker", 10, 3),
            ("av_correlation", 10, 3)], 48, 2352),
    "cm": ([("dct_analyzer", 12, 8), ("quantization_detector", 10, 5), ("block_boundary_checker", 10, 7),
            ("compression_pattern", 8, 3)], 40, 1960),
    "rr": ([("multiscale_analyzer", 12, 5), ("upscaling_detector", 10, 7), ("edge_sharpness", 8, 3),
            ("resolution_consistency", 6, 9)], 36, 1764),
    "tm": ([("frame_consistency", 16, 5), ("motion_flow", 14, 7), ("temporal_artifacts", 12, 3),
            ("sequence_coherence", 10, 9)], 52, 2548),
}


def test_registry_holds_the_six():
    assert {"av", "bg", "cm", "rr", "tm", "ll"} <= set(list_specialists())


@pytest.mark.parametrize("key", sorted(CONTRACT))
def test_seed_contract_numbers(key):
    branches, channels, features = CONTRACT[key]
    spec = get_spec(key)
    assert [(b.name, b.channels, b.kernel) for b in spec.branches] == branches
    assert spec.channels == channels and spec.features == features == channels * 7 * 7


@pytest.mark.parametrize("key", list_specialists())
def test_module_features_match_spec(key):
    spec = get_spec(key)
    assert len(spec.branches) >= 4
    module = SpecialistModule(spec)
    for size in (32, 64):
        out = module(torch.rand(2, 4, 3, size, size))
        assert out.shape == (2, spec.channels * 7 * 7)
    for b in spec.branches:
        conv = module.branches[b.name].conv
        assert conv.out_channels == b.channels and conv.kernel_size == (b.kernel, b.kernel)


@pytest.mark.parametrize("key", list_specialists())
def test_forward_backward_finite_with_gradient_everywhere(key):
    torch.manual_seed(0)
    model = create_model(key, **TINY)
    frames = torch.rand(4, 4, 3, 32, 32)
    audio = torch.randn(4, 40, 16)
    has_audio = torch.tensor([True, False, True, False])
    sync = torch.rand(4, 15, 31) * 2 - 1
    logits = model(frames, audio, has_audio, grid=torch.rand(4, 3, 32, 32), sync=sync, has_sync=has_audio,
                   lighting=torch.randn(4, 15), has_lighting=torch.tensor([True, True, False, True]))
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f"parameters without a finite gradient: {missing}"


def test_temporal_specialist_sees_non_centre_frames():
    torch.manual_seed(0)
    model = create_model("tm", **TINY).eval()
    frames = torch.rand(2, 4, 3, 32, 32)
    changed = frames.clone()
    centre = frames.shape[1] // 2
    for t in range(frames.shape[1]):
        if t != centre:
            changed[:, t] = torch.rand_like(changed[:, t])
    with torch.no_grad():
        assert not torch.allclose(model(frames), model(changed))


@pytest.mark.parametrize("key", ["cm", "rr"])
def test_image_specialist_uses_centre_frame_only(key):
    torch.manual_seed(0)
    model = create_model(key, **TINY).eval()
    frames = torch.rand(2, 4, 3, 32, 32)
    grid = torch.rand(2, 3, 32, 32)
    changed = frames.clone()
    changed[:, 0] = torch.rand_like(changed[:, 0])
    with torch.no_grad():
        assert torch.allclose(model(frames, grid=grid), model(changed, grid=grid))


def test_compression_specialist_branches_see_the_grid_patch_and_refuse_without_it():
    torch.manual_seed(0)
    model = create_model("cm", **TINY).eval()
    frames = torch.rand(2, 4, 3, 32, 32)
    grid = torch.rand(2, 3, 64, 64)  # a patch need not match the crop size
    with torch.no_grad():
        assert not torch.allclose(model(frames, grid=grid), model(frames, grid=grid.flip(-1)))
        as_uint8 = (grid * 255).round().to(torch.uint8)
        assert torch.allclose(model(frames, grid=as_uint8), model(frames, grid=as_uint8.float() / 255), atol=1e-5)
    with pytest.raises(SpecialistError, match="needs the codec-grid patch"):
        model(frames)


def test_high_pass_residual_is_zero_on_flat_images_and_keeps_fine_texture():
    flat = torch.full((1, 3, 16, 16), 0.7)
    assert torch.allclose(high_pass(flat), torch.zeros_like(flat), atol=1e-6)  # edges included
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2
    img = checker.float().expand(1, 3, 16, 16)
    # interior pixel minus the mean of its 3x3: a 1 has 5 ones around it (itself, 4 diagonals),
    # a 0 has 4 (its edge neighbours)
    assert (img[0, 0, 5, 6], img[0, 0, 5, 5]) == (1, 0)
    assert high_pass(img)[0, 0, 5, 6] == pytest.approx((1 - 5 / 9) * RESIDUAL_GAIN)
    assert high_pass(img)[0, 0, 5, 5] == pytest.approx((0 - 4 / 9) * RESIDUAL_GAIN)


@pytest.mark.parametrize("key", ["cm", "rr", "bg", "ll"])
def test_single_frame_specialists_see_their_view_and_its_residual(key):
    spec = get_spec(key)
    assert spec.residual and spec.in_channels == 2 * spec.view.in_channels == 6
    module = SpecialistModule(spec)
    assert all(b.conv.in_channels == 6 for b in module.branches.values())
    # the residual is a real input: a change that only affects fine texture changes the output
    torch.manual_seed(0)
    model = create_model(key, **TINY).eval()
    smooth = torch.full((2, 4, 3, 32, 32), 0.5)
    textured = smooth + 0.02 * (torch.rand(2, 1, 3, 32, 32) - 0.5)
    with torch.no_grad():
        assert not torch.allclose(model(smooth, grid=smooth[:, 0]), model(textured, grid=textured[:, 0]))
    assert get_spec("tm").in_channels == get_spec("av").in_channels == 18  # motion + residual


def test_audio_visual_runs_with_and_without_audio():
    torch.manual_seed(0)
    model = create_model("av", **TINY).eval()
    frames = torch.rand(2, 4, 3, 32, 32)
    audio = torch.randn(2, 40, 16)
    with torch.no_grad():
        without = model(frames)  # no audio at all
        flagged_off = model(frames, audio, torch.tensor([False, False]))
        with_audio = model(frames, audio, torch.tensor([True, True]))
    assert torch.allclose(without, flagged_off)
    assert not torch.allclose(without, with_audio)


def test_audio_visual_sync_input_is_a_token_of_its_own():
    torch.manual_seed(0)
    model = create_model("av", **TINY).eval()
    frames, audio, on = torch.rand(2, 4, 3, 32, 32), torch.randn(2, 40, 16), torch.tensor([True, True])
    peak_at_zero = torch.zeros(2, 15, 31)
    peak_at_zero[:, :, 15] = 1.0
    shifted = peak_at_zero.roll(8, dims=2)
    with torch.no_grad():
        base = model(frames, audio, on)
        assert torch.allclose(base, model(frames, audio, on, sync=peak_at_zero, has_sync=~on))  # flagged off
        assert not torch.allclose(model(frames, audio, on, sync=peak_at_zero, has_sync=on),
                                  model(frames, audio, on, sync=shifted, has_sync=on))
    with pytest.raises(SpecialistError, match=r"sync input of shape \(15, 21\)"):
        model(frames, sync=torch.zeros(2, 15, 21))


def test_background_lighting_encodes_the_lighting_cues_as_a_token_of_its_own():
    torch.manual_seed(0)
    model = create_model("bg", **TINY).eval()
    frames, grid, cues = torch.rand(2, 4, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.randn(2, 15)
    with torch.no_grad():
        base = model(frames, grid=grid)
        assert torch.allclose(base, model(frames, grid=grid, lighting=cues, has_lighting=torch.tensor([False, False])))
        assert not torch.allclose(base, model(frames, grid=grid, lighting=cues, has_lighting=torch.tensor([True, True])))
    assert [k for k in list_specialists() if get_spec(k).uses_lighting] == ["bg"]
    assert [k for k in list_specialists() if get_spec(k).uses_sync] == ["av"]


def test_duplicate_and_unknown_names_are_refused():
    with pytest.raises(SpecialistError, match="already registered"):
        register_specialist(SpecialistSpec(key="av", name="x", detects="x", branches=(BranchSpec("a", 1, 3),)))
    with pytest.raises(SpecialistError, match=r"unknown specialist 'xx'; known: av, bg, cm, ll, rr, tm"):
        get_spec("xx")
    with pytest.raises(SpecialistError, match="unknown timm backbone"):
        create_model("av", backbone="not_a_model")
