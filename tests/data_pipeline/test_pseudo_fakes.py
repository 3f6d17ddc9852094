"""Self-blended pseudo-fakes (``data_pipeline/pseudo_fakes.py``) on real face clips.

The clips are cut the way ``prepare`` cuts them (:func:`~data_pipeline.clips.clip_rows`: a margin
crop of the face resized to S, a codec-grid patch of the centre frame, the crop box as ``face_box``)
from frames holding the portrait matplotlib ships (``tests/real_face.py``), moving a little from
frame to frame. No Ray: the collate function is what Ray Data's prefetch threads call per batch.
"""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pytest
import torch

from data_pipeline.faces import Box, crop_face
from data_pipeline.grid import ALIGN, grid_origin, grid_patch
from data_pipeline.pseudo_fakes import (
    AV_SHIFT_STEPS,
    CROP_MARGIN,
    GRID_ALIGN,
    PseudoFakes,
    av_shifted_row,
    blend_mask,
    crop_geometry,
    draw_av_shift,
    draw_blend,
    grid_geometry,
    pseudo_fake_row,
    replace_fakes_with_pseudo_fakes,
    self_blend,
)
from data_pipeline.shards import SCHEMA, make_row
from ray_jobs.collate import ClipCollate, balance_rates
from ray_jobs.config import ConfigError, StageChain, StageRecipe, TrainConfig, from_dict, to_dict
from ray_jobs.datasets import TRAIN_COLUMNS
from ray_jobs.plan import run_chain
from tests.real_face import Motion, render_frames

SIZE, GRID, T = 64, 128, 4  # crop side, codec-grid patch side, frames per clip
WIDTH, HEIGHT = 320, 240
#: the ``method`` of a self-blended pseudo-fake row
SBI = "pseudo_sbi"
#: columns a pseudo-fake takes from its real clip unchanged (all but the pixels and the label)
COPIED = [c for c in SCHEMA.names if c not in ("frames", "grid", "label", "method")]


# --------------------------------------------------------------------------- real clips


def render_clip(seed: int, x: float, still: bool = False) -> tuple[np.ndarray, Box]:
    """``T`` frames of the portrait moving right from ``x`` (of the width), and the centre frame's
    face box; ``still``: the centre frame ``T`` times."""
    motion = Motion(width=WIDTH, height=HEIGHT, fps=8.0, seconds=T / 8.0, x_path=(x, x + 0.04), seed=seed)
    rendered = list(render_frames(motion))
    frames = np.stack([f for f, _ in rendered])
    if still:
        frames = np.repeat(frames[T // 2][None], T, axis=0)
    return frames, rendered[T // 2][1]


def clip_row(seed: int, x: float = 0.45, label: int = 0, method: str = "real", still: bool = False) -> dict:
    """A clip row as ``prepare`` writes it (crop, grid patch, crop box), with audio, sync curves and
    lighting cues of its own (so that a pseudo-fake's source can be told); fakes have a brightened face."""
    frames, box = render_clip(seed, x, still)
    if label:
        x0, y0, x1, y1 = (int(round(v)) for v in box.as_list())
        frames = frames.copy()
        frames[:, y0:y1, x0:x1] = np.clip(frames[:, y0:y1, x0:x1].astype(np.int16) + 40, 0, 255).astype(np.uint8)
    crops, crop_box = crop_face(frames, box, SIZE, CROP_MARGIN)
    grid = grid_patch(frames[T // 2], box.as_list(), GRID)
    rng = np.random.default_rng(1000 + seed)
    vid = f"train/{seed:03d}.mp4"
    manifest = {"video_id": vid, "path": f"/real_face/{vid}", "dataset": "ffpp", "label": label, "method": method,
                "group": f"g{seed}", "split": "train", "chunk": 0}
    return make_row(manifest, 0, crops, rng.standard_normal((40, 16)).astype(np.float32), crop_box, "resize",
                    grid=grid, sync=rng.standard_normal((3, 9)).astype(np.float32),
                    lighting=rng.standard_normal(15).astype(np.float32))


def columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """NumPy columns of clip rows, as Ray Data hands a batch of shard rows to a collate function."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def frames_of(batch: dict, i: int) -> np.ndarray:
    return np.frombuffer(batch["frames"][i], np.uint8).reshape(int(batch["num_frames"][i]), int(batch["size"][i]),
                                                                int(batch["size"][i]), 3)


def grid_of(batch: dict, i: int) -> np.ndarray:
    g = int(batch["grid_size"][i])
    return np.frombuffer(batch["grid"][i], np.uint8).reshape(g, g, 3)


def same_value(a, b) -> bool:
    if isinstance(a, (bytes, str)) or isinstance(b, (bytes, str)):
        return a == b
    return np.array_equal(np.asarray(a), np.asarray(b))


def same_row(a: dict, i: int, b: dict, j: int, names=None) -> bool:
    return all(same_value(a[c][i], b[c][j]) for c in (names or a))


def same_batch(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(len(a[c]) == len(b[c]) for c in a) and all(
        same_row(a, i, b, i) for i in range(len(a["label"])))


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    """Six real clips and six fakes (two families), each of another video (seed) and face position."""
    reals = [clip_row(s, x=0.3 + 0.07 * s) for s in range(6)]
    fakes = [clip_row(10 + s, x=0.3 + 0.07 * s, label=1, method=("checker", "bright")[s % 2]) for s in range(6)]
    return {"real": reals, "fake": fakes}


@pytest.fixture
def batch(rows) -> dict[str, np.ndarray]:
    """Reals and fakes interleaved: labels 0, 1, 0, 1, ..."""
    return columns([r for pair in zip(rows["real"], rows["fake"]) for r in pair])


def real_frames(rows, i: int = 0) -> np.ndarray:
    return np.frombuffer(rows["real"][i]["frames"], np.uint8).reshape(T, SIZE, SIZE, 3)


# --------------------------------------------------------------------------- the blend


def test_same_seed_gives_the_same_bytes_and_another_seed_other_ones(batch):
    assert draw_blend(np.random.default_rng(5)) == draw_blend(np.random.default_rng(5))
    assert draw_blend(np.random.default_rng(5)) != draw_blend(np.random.default_rng(6))
    cfg = PseudoFakes(ratio=0.5)
    first = replace_fakes_with_pseudo_fakes(batch, cfg, np.random.default_rng(5))
    again = replace_fakes_with_pseudo_fakes(batch, cfg, np.random.default_rng(5))
    assert same_batch(first, again)
    other = replace_fakes_with_pseudo_fakes(batch, cfg, np.random.default_rng(6))
    assert any(a != b for a, b in zip(first["frames"], other["frames"]))

    frames = frames_of(batch, 0)
    draw = draw_blend(np.random.default_rng(11))
    out1, mask1 = self_blend(frames, draw, crop_geometry(SIZE))
    out2, mask2 = self_blend(frames.copy(), draw, crop_geometry(SIZE))
    assert out1.tobytes() == out2.tobytes() and np.array_equal(mask1, mask2)
    assert out1.tobytes() != frames.tobytes()


def test_pixels_change_only_inside_the_blurred_mask(rows):
    frames = real_frames(rows)
    before = frames.copy()
    geom = crop_geometry(SIZE)
    assert (geom.cx, geom.cy) == (SIZE / 2, SIZE / 2) and geom.half == pytest.approx(SIZE / (2 * (1 + 2 * CROP_MARGIN)))
    kinds = set()
    for seed in range(16):  # every frequency change (down, sharpen, none) and several opacities
        draw = draw_blend(np.random.default_rng(seed))
        kinds.add(draw.frequency)
        out, mask = self_blend(frames, draw, geom)
        assert out.shape == frames.shape and out.dtype == np.uint8 and mask.shape == (SIZE, SIZE)
        assert np.array_equal(frames, before)  # the input is not modified
        outside = mask == 0
        assert outside[0, 0] and outside[-1, -1] and outside.mean() > 0.2  # the crop's corners are never blended
        assert np.array_equal(out[:, outside], frames[:, outside])  # untouched, exactly
        # the mask covers the face: full opacity at its middle, blurred (soft) towards its edge
        assert mask[SIZE // 2, SIZE // 2] == pytest.approx(draw.blend, abs=1e-3)
        assert mask.max() <= draw.blend + 1e-6
        soft = (mask > 0) & (mask < 0.5 * draw.blend)
        assert soft.sum() > 0.1 * (mask > 0).sum()
        changed = (out != frames).any(axis=-1)
        assert changed[:, mask > 0.05 * draw.blend].mean() > 0.5, (seed, draw)
    assert kinds == {"down", "sharpen", "none"}


def test_every_frame_of_a_clip_gets_the_same_blend():
    still = np.frombuffer(clip_row(3, still=True)["frames"], np.uint8).reshape(T, SIZE, SIZE, 3)
    moving = np.frombuffer(clip_row(3)["frames"], np.uint8).reshape(T, SIZE, SIZE, 3)
    assert all(np.array_equal(f, still[0]) for f in still)
    assert not np.array_equal(moving[0], moving[-1])
    geom = crop_geometry(SIZE)
    for seed in range(6):
        draw = draw_blend(np.random.default_rng(seed))
        out, _ = self_blend(still, draw, geom)
        assert not np.array_equal(out[0], still[0])
        assert all(np.array_equal(f, out[0]) for f in out), seed  # identical frames stay identical

        out, mask = self_blend(moving, draw, geom)
        assert mask.shape == (SIZE, SIZE)  # one mask for the whole clip
        for i in range(T):
            changed = (out[i] != moving[i]).any(axis=-1)
            assert changed.any() and not changed[mask == 0].any(), (seed, i)
            # each frame gets what it would alone: the same draw, the same mask
            alone, alone_mask = self_blend(moving[i:i + 1], draw, geom)
            assert np.array_equal(alone[0], out[i]) and np.array_equal(alone_mask, mask)

    row = clip_row(3, still=True)
    out = pseudo_fake_row(row, draw_blend(np.random.default_rng(1)))
    frames = np.frombuffer(out["frames"], np.uint8).reshape(T, SIZE, SIZE, 3)
    assert all(np.array_equal(f, frames[0]) for f in frames) and not np.array_equal(frames[0], still[0])


def test_the_grid_patch_gets_the_same_draw_over_the_same_face():
    assert GRID_ALIGN == ALIGN
    frames, box = render_clip(4, x=0.4)
    crops, crop_box = crop_face(frames, box, SIZE, CROP_MARGIN)
    row = clip_row(4, x=0.4)
    assert np.array_equal(np.asarray(row["face_box"]), np.asarray(crop_box, np.float32))
    patch = np.frombuffer(row["grid"], np.uint8).reshape(GRID, GRID, 3)
    gx, gy = grid_origin(box.as_list(), GRID, WIDTH, HEIGHT)
    geom = grid_geometry(np.asarray(row["face_box"]), GRID)
    # the face's centre in the patch, where grid.grid_origin cut it (a face away from the frame's edges)
    assert (geom.cx, geom.cy) == pytest.approx(((crop_box[0] + crop_box[2]) / 2 - gx, (crop_box[1] + crop_box[3]) / 2 - gy))
    scale = (crop_box[2] - crop_box[0]) / SIZE  # frame pixels per crop pixel
    assert geom.half == pytest.approx(crop_geometry(SIZE).half * scale)

    for seed in range(6):
        draw = draw_blend(np.random.default_rng(seed))
        out = pseudo_fake_row(row, draw)
        assert out["frames"] == self_blend(crops, draw, crop_geometry(SIZE))[0].tobytes()
        blended, mask = self_blend(patch[None], draw, geom)
        got = np.frombuffer(out["grid"], np.uint8).reshape(GRID, GRID, 3)
        assert np.array_equal(got, blended[0])
        changed = (got != patch).any(axis=-1)
        assert changed.any() and not changed[mask == 0].any()

        # both masks lie on the same place of the frame, at the same size, over the face
        crop_mask = blend_mask((SIZE, SIZE), draw, crop_geometry(SIZE))
        yy, xx = np.mgrid[:SIZE, :SIZE]
        c = np.array([(crop_mask * xx).sum(), (crop_mask * yy).sum()]) / crop_mask.sum()
        crop_centre = np.array(crop_box[:2]) + (c + 0.5) * scale - 0.5
        yy, xx = np.mgrid[:GRID, :GRID]
        grid_centre = np.array([gx, gy]) + np.array([(mask * xx).sum(), (mask * yy).sum()]) / mask.sum()
        assert np.abs(crop_centre - grid_centre).max() < 1.5, (seed, crop_centre, grid_centre)
        assert crop_mask.sum() * scale ** 2 == pytest.approx(mask.sum(), rel=0.1)
        face_centre = np.array(box.center)
        assert np.abs(grid_centre - face_centre).max() < 0.15 * geom.half + 1.0


# --------------------------------------------------------------------------- batches


def test_the_real_sample_is_left_untouched(rows, batch):
    before = copy.deepcopy(batch)
    labels = batch["label"]
    out = replace_fakes_with_pseudo_fakes(batch, PseudoFakes(ratio=1.0), np.random.default_rng(0))
    assert same_batch(batch, before)  # the input columns are not modified
    assert out["label"] is not labels and out["frames"] is not batch["frames"]
    real = np.flatnonzero(before["label"] == 0)
    assert len(real) == 6 and all(same_row(out, i, before, i) for i in real)
    assert all(out["frames"][i] == rows["real"][k]["frames"] for k, i in enumerate(real))

    row = dict(rows["real"][0])
    pseudo_fake_row(row, draw_blend(np.random.default_rng(0)))
    assert row == rows["real"][0]  # the source row itself is not changed either


@pytest.mark.parametrize("ratio, replaced", [(0.3, 2), (0.5, 3), (1.0, 6)])
def test_a_share_of_the_fakes_become_pseudo_fakes_of_real_rows(batch, ratio, replaced):
    before = copy.deepcopy(batch)
    out = replace_fakes_with_pseudo_fakes(batch, PseudoFakes(ratio=ratio), np.random.default_rng(3))
    assert {c: len(v) for c, v in out.items()} == {c: len(v) for c, v in batch.items()}
    assert np.bincount(out["label"], minlength=2).tolist() == np.bincount(before["label"], minlength=2).tolist()
    pseudo = np.flatnonzero(out["method"] == SBI)
    assert len(pseudo) == replaced == round(ratio * (before["label"] == 1).sum())
    assert (before["label"][pseudo] == 1).all() and (out["label"][pseudo] == 1).all()
    kept = np.setdiff1d(np.arange(len(out["label"])), pseudo)
    assert all(same_row(out, i, before, i) for i in kept)  # the other fakes and every real row as they were

    real = np.flatnonzero(before["label"] == 0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    far = np.hypot(yy - (SIZE - 1) / 2, xx - (SIZE - 1) / 2) > 0.6 * SIZE  # beyond any mask's reach
    used = []
    for i in pseudo:
        sources = [j for j in real if same_row(out, i, before, j, COPIED)]
        assert len(sources) == 1, i  # audio, sync, lighting, face box, ids: those of one real clip
        src = sources[0]
        used.append(src)
        got, original = frames_of(out, i), frames_of(before, src)
        assert np.array_equal(got[:, far], original[:, far]) and not np.array_equal(got, original)
        assert not np.array_equal(grid_of(out, i), grid_of(before, src))
    assert len(set(used)) == len(used)  # as many reals as fakes: each real clip used once at most


def test_more_fakes_than_reals_reuses_real_clips(rows):
    batch = columns([rows["real"][0], *rows["fake"], rows["real"][1]])
    out = replace_fakes_with_pseudo_fakes(batch, PseudoFakes(ratio=1.0), np.random.default_rng(0))
    assert (out["method"][1:7] == SBI).all() and out["label"].tolist() == batch["label"].tolist()
    assert {str(v) for v in out["video_id"][1:7]} <= {rows["real"][0]["video_id"], rows["real"][1]["video_id"]}
    assert len({out["frames"][i] for i in range(1, 7)}) == 6  # each a blend of its own


def test_a_batch_without_real_or_fake_rows_is_returned_unchanged(rows):
    for part in (rows["fake"], rows["real"]):
        batch = columns(part)
        before = copy.deepcopy(batch)
        out = replace_fakes_with_pseudo_fakes(batch, PseudoFakes(ratio=1.0), np.random.default_rng(0))
        assert same_batch(out, before) and not (out["method"] == SBI).any()
    # round(0.3 x 1 fake) = 0 pseudo-fakes
    batch = columns([rows["real"][0], rows["fake"][0]])
    out = replace_fakes_with_pseudo_fakes(batch, PseudoFakes(ratio=0.3), np.random.default_rng(0))
    assert same_batch(out, columns([rows["real"][0], rows["fake"][0]]))


def test_clip_collate_with_pseudo_fakes_gives_the_same_tensors_for_the_same_seed_and_batch(batch):
    batch = {c: batch[c] for c in TRAIN_COLUMNS}  # what the training stream reads
    before = copy.deepcopy(batch)
    rates = balance_rates({0: 6, 1: 6})
    cfg = PseudoFakes(method="sbi", ratio=0.5)
    first = ClipCollate(rates, seed=(0, 1, 0), pseudo_fakes=cfg)(batch)
    ClipCollate(rates, seed=(0, 1, 0), pseudo_fakes=cfg)({k: v[::-1] for k, v in batch.items()})  # another batch between
    again = ClipCollate(rates, seed=(0, 1, 0), pseudo_fakes=cfg)(batch)
    assert same_batch(batch, before)
    assert set(first) == set(again) and "grid" in first
    for k, v in first.items():
        assert torch.equal(v, again[k]), k
    plain = ClipCollate(rates, seed=(0, 1, 0))(batch)  # the same balancing draw, no pseudo-fakes
    assert torch.equal(first["label"], plain["label"])
    assert not torch.equal(first["frames"], plain["frames"]) and not torch.equal(first["grid"], plain["grid"])
    replaced = [i for i in range(len(first["label"])) if not torch.equal(first["frames"][i], plain["frames"][i])]
    assert replaced and all(first["label"][i] == 1 for i in replaced)
    assert len(replaced) == round(0.5 * int(plain["label"].sum()))
    reals = [j for j in range(len(plain["label"])) if plain["label"][j] == 0]
    for i in range(len(first["label"])):  # a pseudo-fake hears and syncs as its real clip; the others as they were
        sources = [j for j in reals if torch.equal(first["audio"][i], plain["audio"][j])] if i in replaced else [i]
        assert sources and all(torch.equal(first["sync"][i], plain["sync"][j]) for j in sources), i
        assert torch.equal(first["audio"][i], plain["audio"][sources[0]])
    other = ClipCollate(rates, seed=(0, 2, 0), pseudo_fakes=cfg)(batch)
    assert not torch.equal(other["frames"], first["frames"])


# --------------------------------------------------------------------------- config


def _ffpp() -> dict:
    return to_dict(StageChain.load().get("ffpp"))


def test_a_stage_recipe_takes_pseudo_fakes_and_records_them():
    assert StageChain.load().get("ffpp").pseudo_fakes is None
    recipe = from_dict(StageRecipe, {**_ffpp(), "pseudo_fakes": {"method": "sbi", "ratio": 0.5}})
    assert recipe.pseudo_fakes == PseudoFakes(method="sbi", ratio=0.5, margin=CROP_MARGIN)
    assert to_dict(recipe)["pseudo_fakes"] == {"method": "sbi", "ratio": 0.5, "margin": CROP_MARGIN}
    assert from_dict(StageRecipe, to_dict(recipe)) == recipe  # as a checkpoint's meta.json holds it
    assert from_dict(StageRecipe, {**_ffpp(), "pseudo_fakes": {"ratio": 1}}).pseudo_fakes.ratio == 1.0
    cfg = TrainConfig(stage_overrides={"ffpp": {"pseudo_fakes": {"method": "sbi", "ratio": 0.5}}})
    assert run_chain(cfg).get("ffpp").pseudo_fakes == PseudoFakes(ratio=0.5)
    assert run_chain(cfg).get("celebdf").pseudo_fakes is None


@pytest.mark.parametrize("value, message", [
    ({"method": "blend"}, "pseudo_fakes.method 'blend' is not one of ['sbi'"),
    ({"method": "sbi", "ratio": 0}, "pseudo_fakes.ratio must be in (0, 1], got 0"),
    ({"method": "sbi", "ratio": 1.5}, "pseudo_fakes.ratio must be in (0, 1], got 1.5"),
    ({"ratio": -0.5}, "pseudo_fakes.ratio must be in (0, 1]"),
    ({"margin": -0.1}, "pseudo_fakes.margin must be >= 0"),
    ({"methd": "sbi"}, "unknown field(s) methd"),
    ("sbi", "expected a mapping"),
])
def test_bad_pseudo_fakes_are_refused_in_one_line(value, message):
    with pytest.raises(ConfigError) as err:
        from_dict(StageRecipe, {**_ffpp(), "pseudo_fakes": value})
    text = str(err.value)
    assert "\n" not in text and "pseudo_fakes" in text and message in text, text
    with pytest.raises(ConfigError) as err:
        run_chain(TrainConfig(stage_overrides={"ffpp": {"pseudo_fakes": value}}))
    text = str(err.value)
    assert "\n" not in text and text.startswith("stage_overrides.ffpp.pseudo_fakes") and message in text, text


# --------------------------------------------------------------------------- av_shift


def sync_row(peak: int = 15, offsets: int = 31, with_sync: bool = True) -> dict:
    """A real clip row whose sync curves peak at offset index ``peak`` (in sync: the middle)."""
    row = dict(clip_row(40))
    curves = np.exp(-0.5 * ((np.arange(offsets) - peak) / 1.5) ** 2)[None].repeat(15, axis=0).astype(np.float32)
    row["sync"], row["sync_shape"] = (curves.tobytes(), [15, offsets]) if with_sync else (b"", [0, 0])
    return row


@pytest.mark.parametrize("steps", [10, -10, 6, -13])
def test_av_shift_moves_the_sync_peak_as_a_late_or_early_voice_would(steps):
    """A voice ``steps`` offsets late peaks at ``+steps`` (test_sync: the offsets read the audio
    ``o / 25`` s later): the pseudo-fake's curves peak there; the frames and grid are the real's."""
    row = sync_row()
    fake = av_shifted_row(row, steps)
    curves = np.frombuffer(fake["sync"], np.float32).reshape(15, 31)
    assert (curves.argmax(axis=1) == 15 + steps).all()
    assert fake["label"] == 1 and fake["method"] == "pseudo_av_shift"
    assert fake["frames"] == row["frames"] and fake["grid"] == row["grid"]
    assert np.frombuffer(row["sync"], np.float32).reshape(15, 31).argmax(axis=1).tolist() == [15] * 15  # untouched


def test_av_shift_draws_shifts_of_a_dubbed_voice_either_way():
    drawn = [draw_av_shift(np.random.default_rng(s)) for s in range(200)]
    assert {abs(d) for d in drawn} <= set(range(AV_SHIFT_STEPS[0], AV_SHIFT_STEPS[1] + 1))
    assert min(drawn) < 0 < max(drawn)


def test_av_shift_is_only_for_specialists_that_read_the_sync_curves():
    both = PseudoFakes(method="sbi+av_shift")
    assert both.kinds == ("sbi", "av_shift")
    assert both.for_model(uses_sync=True) == both
    assert both.for_model(uses_sync=False) == PseudoFakes(method="sbi")
    assert PseudoFakes(method="av_shift").for_model(uses_sync=False) is None


def test_av_shift_pseudo_fakes_come_only_from_real_rows_with_sync_curves(rows):
    """With ``av_shift`` alone, real rows without curves are never used; with both methods, such a
    row gets a blend, and rows with curves either kind."""
    reals = [sync_row(), {**sync_row(with_sync=False), "video_id": "train/no-sync.mp4"}]
    batch = columns([*reals, *rows["fake"][:4]])
    out = replace_fakes_with_pseudo_fakes(batch, PseudoFakes(method="av_shift", ratio=1.0), np.random.default_rng(0))
    assert list(out["method"][2:]) == ["pseudo_av_shift"] * 4
    assert set(out["video_id"][2:]) == {reals[0]["video_id"]}
    kinds = {}
    for seed in range(8):
        out = replace_fakes_with_pseudo_fakes(batch, PseudoFakes(method="sbi+av_shift", ratio=1.0),
                                              np.random.default_rng(seed))
        for vid, method in zip(out["video_id"][2:], out["method"][2:]):
            kinds.setdefault(vid, set()).add(method)
    assert kinds["train/no-sync.mp4"] == {SBI}
    assert kinds[reals[0]["video_id"]] == {SBI, "pseudo_av_shift"}
