"""The stages of the preparation pipeline, as the functions and callable classes Ray Data runs.

``ray_jobs.sharding`` chains them (nothing here imports Ray, so workers load only light modules)::

    shard items  -> flat_map(decode_stage)        CPU tasks: one row per video, its decoded clips
                 -> map_batches(DetectStage)       actors: the detector is built ONCE per actor and
                                                   runs on the probe frames of a batch of videos
                                                   (``num_gpus`` per actor on a GPU cluster)
                 -> map(crop_stage)                CPU tasks: face tracks, labels, crops, filters
                 -> map_batches(ShardWriter)       one actor: gathers each shard's videos and
                                                   writes the shard atomically once all arrived
                 -> per-video status rows

Rows carry a video's decoded clips pickled in one binary column (``payload``): frames differ in
size from video to video, and the detector stage passes the column through untouched. A video
that fails at any step becomes a ``skipped`` status (its reason, never a dropped row), and the
writer writes a shard even when all its videos were skipped, so a rerun knows it is done.
:func:`process_shard` runs the same steps in one process (tests, benchmarks).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

from .clips import ClipConfig, SkipVideo, clip_rows, decode_video, detect_faces
from .faces import Box, FaceDetector
from .filesystems import FsPath
from .shards import Location, write_shard
from .sources.manifest import ManifestRow


def video_status(
    row: ManifestRow, status: str, clips: int = 0, reason: str = "", detail: str = "", notes: Iterable[str] = (),
    faces: int = 0,
) -> dict[str, Any]:
    """The per-video status record of a preparation run (stored in the shard's metadata)."""
    return {
        "video_id": row.video_id,
        "path": row.path,
        "split": row.split,
        "chunk": row.chunk,
        "label": row.label,
        "method": row.method,
        "status": status,
        "clips": clips,
        "faces": faces,
        "reason": reason,
        "detail": detail,
        "notes": "; ".join(notes),
    }


def _error_status(row: ManifestRow, exc: Exception) -> dict[str, Any]:
    if isinstance(exc, SkipVideo):
        return video_status(row, "skipped", reason=exc.reason, detail=exc.detail)
    text = str(exc).strip()
    return video_status(row, "skipped", reason="error", detail=f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}")


# --------------------------------------------------------------------------- stage 1: decode (CPU task)


def decode_stage(item: Mapping[str, Any], clip: Mapping[str, Any], endpoint: str | None = None) -> list[dict[str, Any]]:
    """``{"shard", "videos": JSON manifest rows}`` -> one row per video: ``shard``, ``shard_videos``,
    ``order`` (position in the shard), ``video`` (JSON manifest row), ``payload`` (pickled decoded
    clips, or ``b""``) and ``status`` (JSON, set when the video is already skipped)."""
    cfg = ClipConfig.from_dict(clip)
    rows = [ManifestRow.from_dict(r) for r in json.loads(item["videos"])]
    out = []
    for order, row in enumerate(rows):
        payload, status = b"", ""
        try:
            payload = pickle.dumps(decode_video(row, cfg, endpoint), protocol=5)
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the job
            status = json.dumps(_error_status(row, exc))
        out.append({"shard": item["shard"], "shard_videos": len(rows), "order": order,
                    "video": json.dumps(row.to_dict()), "payload": payload, "status": status})
    return out


# --------------------------------------------------------------------------- stage 2: detect (actor)


def _boxes_to_json(per_clip: list[list[list[Box]]]) -> str:
    return json.dumps([[[[*b.as_list(), b.score] for b in frame] for frame in clip] for clip in per_clip])


def _boxes_from_json(text: str) -> list[list[list[Box]]]:
    return [[[Box(*b) for b in frame] for frame in clip] for clip in json.loads(text)]


#: detectors built in this process (a ``DetectStage`` actor builds one; tests check it)
_BUILT = 0


class DetectStage:
    """Ray Data callable class: the face detector of ``clip`` built once per actor; each batch of
    video rows gets a ``detections`` column (JSON boxes per clip, per probe frame) and a
    ``detector`` column (``"<pid>:<detectors built in that process>"``, reported per video)."""

    def __init__(self, clip: Mapping[str, Any], use_gpu: bool = False, torch_threads: int | None = None) -> None:
        if torch_threads and importlib.util.find_spec("torch") is not None:
            import torch

            torch.set_num_threads(int(torch_threads))
        self.cfg = ClipConfig.from_dict(clip)
        if use_gpu and self.cfg.detector == "mtcnn":  # the actor was given a GPU: run the CNN there
            self.cfg.detector_options = {"device": "cuda", **self.cfg.detector_options}
        self.detector: FaceDetector = self.cfg.make_detector()
        global _BUILT
        _BUILT += 1

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        found = []
        for payload, status in zip(batch["payload"], batch["status"]):
            text = ""
            if not status:
                try:
                    text = _boxes_to_json(detect_faces(pickle.loads(payload), self.detector, self.cfg.probes))
                except Exception as exc:  # noqa: BLE001 - reported as the video's status downstream
                    text = json.dumps({"error": f"{type(exc).__name__}: {str(exc).strip()[:200]}"})
            found.append(text)
        return {**batch, "detections": found, "detector": [f"{os.getpid()}:{_BUILT}"] * len(found)}


# --------------------------------------------------------------------------- stage 3: crop (CPU task)


def crop_stage(item: Mapping[str, Any], clip: Mapping[str, Any], endpoint: str | None = None) -> dict[str, Any]:
    """A detected video row -> ``shard``, ``shard_videos``, ``order``, ``rows`` (pickled clip
    rows) and ``status`` (JSON)."""
    row = ManifestRow.from_dict(json.loads(item["video"]))
    rows: list[dict[str, Any]] = []
    status = item["status"]
    if not status:
        try:
            detections = json.loads(item["detections"])
            if isinstance(detections, dict):
                raise RuntimeError(f"face detection failed: {detections['error']}")
            result = clip_rows(row, pickle.loads(item["payload"]), _boxes_from_json(item["detections"]),
                               ClipConfig.from_dict(clip), endpoint)
            rows = result.rows
            status = json.dumps(video_status(row, "ok", clips=len(rows), notes=result.notes, faces=result.faces))
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the job
            status = json.dumps(_error_status(row, exc))
    return {"shard": item["shard"], "shard_videos": int(item["shard_videos"]), "order": int(item["order"]),
            "rows": pickle.dumps(rows, protocol=5), "status": status,
            "detector": str(item["detector"])}


# --------------------------------------------------------------------------- stage 4: write (one actor)


class ShardWriter:
    """Ray Data callable class (ONE actor): gathers the cropped videos of each shard, in any order,
    and writes the shard (videos in plan order) once all its videos arrived; returns one status
    row per video of the shards it wrote in that batch (no row for shards still incomplete)."""

    def __init__(self, out_dir: str, fingerprint: str, endpoint: str | None = None) -> None:
        self.out = FsPath.of(out_dir, endpoint)
        self.fingerprint = fingerprint
        self.pending: dict[str, dict[int, tuple[bytes, dict[str, Any], str]]] = {}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        done: list[dict[str, Any]] = []
        for shard, total, order, rows, status, actor in zip(batch["shard"], batch["shard_videos"], batch["order"],
                                                            batch["rows"], batch["status"], batch["detector"]):
            videos = self.pending.setdefault(str(shard), {})
            videos[int(order)] = (rows, json.loads(status), str(actor))
            if len(videos) == int(total):
                done += self._write(str(shard), self.pending.pop(str(shard)))
        keys = ("video_id", "path", "split", "chunk", "label", "method", "status", "clips", "faces", "reason",
                "detail", "notes", "shard", "shard_videos", "detector")
        return {k: [d[k] for d in done] for k in keys}

    def _write(self, shard: str, videos: dict[int, tuple[bytes, dict[str, Any], str]]) -> list[dict[str, Any]]:
        clip_rows_: list[dict[str, Any]] = []
        statuses = []
        for order in sorted(videos):
            rows, status, _ = videos[order]
            clip_rows_ += pickle.loads(rows)
            statuses.append(status)
        write_shard(self.out / shard, clip_rows_, {"config": self.fingerprint, "status": statuses})
        return [{**s, "shard": shard, "shard_videos": len(videos), "detector": videos[o][2]}
                for o, s in zip(sorted(videos), statuses)]


# --------------------------------------------------------------------------- in one process


def process_shard(
    name: str, rows: list[ManifestRow], out_dir: Location, cfg: ClipConfig, metadata: Mapping[str, Any] | None = None,
    endpoint: str | None = None, detector: FaceDetector | None = None,
) -> list[dict[str, Any]]:
    """The stages in one process: make the shard ``out_dir/name`` from ``rows``' videos and return
    one status per video (also stored in the shard's metadata next to ``metadata``)."""
    detector = detector or cfg.make_detector()
    clip_rows_all: list[dict[str, Any]] = []
    statuses = []
    for row in rows:
        try:
            decoded = decode_video(row, cfg, endpoint)
            result = clip_rows(row, decoded, detect_faces(decoded, detector, cfg.probes), cfg, endpoint)
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the job
            statuses.append(_error_status(row, exc))
            continue
        clip_rows_all += result.rows
        statuses.append(video_status(row, "ok", clips=len(result.rows), notes=result.notes, faces=result.faces))
    write_shard(FsPath.of(out_dir, endpoint) / name, clip_rows_all, {**(metadata or {}), "status": statuses})
    return statuses
