"""Parquet clip shards: schema, atomic writes, names, metadata, and rows -> training batch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from data_pipeline import shards
from data_pipeline.batch import rows_to_batch
from data_pipeline.shards import (
    SCHEMA,
    ShardError,
    decode_row,
    list_complete_shards,
    make_row,
    parse_shard_name,
    remove_partial,
    shard_metadata,
    shard_name,
    write_shard,
)
from data_pipeline.sources import ManifestRow

T, S, G = 4, 16, 32


def clip_rows(n_videos: int = 3, clips: int = 2, audio_every: int = 2, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(n_videos):
        m = ManifestRow(f"v/{v:03d}.mp4", f"/data/v/{v:03d}.mp4", "ffpp", v % 2, "Deepfakes" if v % 2 else "real", f"{v:03d}", "train")
        for c in range(clips):
            frames = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
            audio = rng.normal(size=(40, 16)).astype(np.float32) if v % audio_every == 0 else None
            grid = rng.integers(0, 256, (G, G, 3), dtype=np.uint8)
            sync = rng.uniform(-1, 1, (15, 31)).astype(np.float32) if audio is not None else None
            light = rng.normal(size=15).astype(np.float32) if c == 0 else None
            rows.append(make_row(m.to_dict(), c, frames, audio, [1.0, 2.0, 3.5, 4.5], "clahe", grid=grid, sync=sync,
                                 lighting=light))
    return rows


def test_schema_matches_contract() -> None:
    assert SCHEMA.names == [
        "video_id", "path", "dataset", "label", "method", "group", "split", "chunk", "original",
        "clip_index", "face_index", "frames", "num_frames", "size", "audio", "audio_shape", "has_audio",
        "grid", "grid_size", "sync", "sync_shape", "lighting", "face_box", "preprocessing",
    ]
    assert str(SCHEMA.field("frames").type) == "binary"
    assert str(SCHEMA.field("audio_shape").type) == "list<item: int32>"
    assert str(SCHEMA.field("face_box").type) == "list<item: float>"


def test_roundtrip_and_metadata(tmp_path: Path) -> None:
    rows = clip_rows()
    path = write_shard(tmp_path / shard_name("ffpp", "train", ["b", "a"]), rows, {"status": [{"video_id": "a"}]})
    assert path.name == shard_name("ffpp", "train", ["a", "b"])  # order-independent
    assert not list(tmp_path.glob("*.tmp"))
    back = shards.read_rows(path)
    assert len(back) == len(rows)
    for r, b in zip(rows, back):
        frames, audio = decode_row(b)
        assert np.array_equal(frames, np.frombuffer(r["frames"], np.uint8).reshape(T, S, S, 3))
        assert (audio is None) == (not r["has_audio"])
        if audio is not None:
            assert audio.shape == (40, 16) and audio.dtype == np.float32
        else:
            assert b["audio"] == b"" and b["audio_shape"] == [0, 0]
    assert pq.read_schema(path).remove_metadata().equals(SCHEMA)
    assert shard_metadata(path) == {"status": [{"video_id": "a"}]}


def test_names_listing_and_partials(tmp_path: Path) -> None:
    a = shard_name("dfdc", "val", ["x"], chunk=3)
    assert parse_shard_name(a) == {"dataset": "dfdc", "split": "val", "chunk": 3, "digest": a.split("-")[-1][:16]}
    b = shard_name("dfdc", "train", ["y"], chunk=0)
    c = shard_name("ffpp", "train", ["z"])
    for name in (a, b, c):
        write_shard(tmp_path / name, [])  # zero-row shards are valid
    (tmp_path / (c + ".tmp")).write_bytes(b"partial")
    (tmp_path / "notes.parquet").write_bytes(b"not ours")
    assert [p.name for p in list_complete_shards(tmp_path)] == sorted([a, b, c])
    assert [p.name for p in list_complete_shards(tmp_path, dataset="dfdc", split=["train", "val"], chunk=3)] == [a]
    assert [p.name for p in list_complete_shards(tmp_path, split="train")] == sorted([b, c])
    assert [p.name for p in remove_partial(tmp_path)] == [c + ".tmp"]
    assert pq.read_table(tmp_path / a).num_rows == 0


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    bad = clip_rows(1)
    bad[0] = {k: v for k, v in bad[0].items() if k != "label"}
    with pytest.raises(ShardError, match="schema"):
        write_shard(tmp_path / "ffpp-train-0123456789abcdef.parquet", bad)
    assert os.listdir(tmp_path) == []


def test_make_row_validates() -> None:
    m = ManifestRow("a.mp4", "/a.mp4", "ffpp", 0, "real", "a", "train").to_dict()
    with pytest.raises(ShardError, match="uint8"):
        make_row(m, 0, np.zeros((T, S, S + 1, 3), np.uint8), None, [0, 0, 1, 1], "resize")
    with pytest.raises(ShardError, match="audio"):
        make_row(m, 0, np.zeros((T, S, S, 3), np.uint8), np.zeros(5, np.float32), [0, 0, 1, 1], "resize")


def _check_batch(batch: dict, rows: list[dict]) -> None:
    b = len(rows)
    assert batch["frames"].shape == (b, T, 3, S, S) and batch["frames"].dtype == torch.float32
    assert 0.0 <= float(batch["frames"].min()) and float(batch["frames"].max()) <= 1.0
    assert batch["audio"].shape == (b, 40, 16) and batch["audio"].dtype == torch.float32
    assert batch["has_audio"].dtype == torch.bool and batch["label"].dtype == torch.int64
    for i, r in enumerate(rows):
        frames, audio = decode_row(r)
        expect = torch.from_numpy(frames.copy()).permute(0, 3, 1, 2).float() / 255
        assert torch.allclose(batch["frames"][i], expect)
        assert bool(batch["has_audio"][i]) == r["has_audio"]
        assert int(batch["label"][i]) == r["label"]
        if audio is None:
            assert not batch["audio"][i].any()
        else:
            assert torch.equal(batch["audio"][i], torch.from_numpy(audio.copy()))
        grid = np.frombuffer(r["grid"], np.uint8).reshape(G, G, 3)
        assert torch.allclose(batch["grid"][i], torch.from_numpy(grid.copy()).permute(2, 0, 1).float() / 255)
        assert bool(batch["has_sync"][i]) == r["has_audio"]
        if r["has_audio"]:
            assert torch.equal(batch["sync"][i], torch.from_numpy(np.frombuffer(r["sync"], np.float32).reshape(15, 31).copy()))
        else:
            assert r["sync"] == b"" and r["sync_shape"] == [0, 0] and not batch["sync"][i].any()
        assert bool(batch["has_lighting"][i]) == bool(len(r["lighting"]))
        assert torch.allclose(batch["lighting"][i], torch.tensor(r["lighting"] or [0.0] * 15))


def test_rows_to_batch_numpy_and_arrow(tmp_path: Path) -> None:
    rows = clip_rows()
    path = write_shard(tmp_path / shard_name("ffpp", "train", ["a"]), rows)
    table = pq.read_table(path)
    _check_batch(rows_to_batch(table), rows)
    as_numpy = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    out = rows_to_batch(as_numpy, extras=("method", "video_id"))
    _check_batch(out, rows)
    assert out["video_id"][0] == "v/000.mp4"
    no_audio = rows_to_batch(pq.read_table(path).slice(2, 2), audio_shape=(8, 4))  # video 1 has no audio
    assert no_audio["audio"].shape == (2, 8, 4) and not no_audio["has_audio"].any()
    assert no_audio["sync"].shape == (2, 15, 31) and not no_audio["has_sync"].any()
    mixed = [dict(r) for r in rows[:2]]
    mixed[1].update(grid=np.zeros((16, 16, 3), np.uint8).tobytes(), grid_size=16)
    with pytest.raises(ShardError, match="mixes codec-grid patch sizes"):
        rows_to_batch({k: [r[k] for r in mixed] for k in rows[0]})


@pytest.mark.ray
def test_rows_to_batch_on_ray_data_batches(tmp_path: Path) -> None:
    import ray

    from ray_jobs.cluster import init_ray

    rows = clip_rows(n_videos=6)
    write_shard(tmp_path / shard_name("ffpp", "train", ["a"]), rows[:6], {"status": [1]})
    write_shard(tmp_path / shard_name("ffpp", "train", ["b"]), rows[6:], {"status": [2]})
    init_ray(num_cpus=1)
    try:
        ds = ray.data.read_parquet([str(p) for p in list_complete_shards(tmp_path)])
        got = []
        for batch in ds.iter_batches(batch_size=4, batch_format="numpy"):
            out = rows_to_batch(batch, extras=("video_id", "clip_index"))
            got += list(zip(out["video_id"], (int(c) for c in out["clip_index"])))
            assert out["frames"].shape[1:] == (T, 3, S, S)
        assert sorted(got) == sorted((r["video_id"], r["clip_index"]) for r in rows)
    finally:
        ray.shutdown()
