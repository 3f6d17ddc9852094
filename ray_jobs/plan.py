"""Planning a run: which (specialist, stage) still needs training, on which shards, from which weights.

Everything is checked here, on the driver, before any worker starts: bad configs, missing shards,
a class missing from a chunk, a predecessor without a checkpoint all raise one-line
``ConfigError``s. The result is plain data (:class:`Job`) that trainers and sweep trials carry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_pipeline.filesystems import FsPath, LocationError, check_location, map_files
from data_pipeline.shards import list_complete_shards, outdated_schema, parse_shard_name
from ray_jobs import layout
from ray_jobs.config import ConfigError, StageChain, StageRecipe, TrainConfig, from_dict, to_dict
from ray_jobs.storage import Storage, StorageError
from specialists.model import ModelConfig
from specialists.registry import get_spec, list_specialists


@dataclass
class Job:
    """One (specialist, stage) to train: everything a trial needs, as plain data."""

    specialist: str
    recipe: StageRecipe
    model: ModelConfig
    train_files: list[list[str]]
    """Training shard files per chunk (one list for unchunked stages)."""
    val_files: list[str]
    test_files: list[str]
    class_counts: list[dict[int, int]]
    """Training label counts per chunk."""
    init_parts: list[str] | None
    """Storage parts of the checkpoint to initialise from (weights only), if any."""
    init_external: str | None = None
    """A local/NFS checkpoint folder to initialise from (``init_checkpoints``)."""
    hold_out: list[str] = dataclasses.field(default_factory=list)
    """Families whose fakes the stage's training and validation streams leave out (``TrainConfig.hold_out``)."""
    trained_methods: list[str] | None = dataclasses.field(default_factory=list)
    """Fake families the model has been trained on, this stage and through the checkpoint it
    starts from: recorded in checkpoints, so ``evaluate`` can mark the others; ``None`` when the
    starting checkpoint records nothing."""

    @property
    def run_name(self) -> str:
        return layout.run_name(self.specialist, self.recipe.name)


@dataclass
class StageShards:
    """A stage's complete shards, training files grouped by chunk, and their clip format."""

    stage: StageRecipe
    train_files: list[list[str]]
    val: list[str]
    test: list[str]
    counts: list[dict[int, int]]
    num_frames: int
    size: int
    methods: set[str] = dataclasses.field(default_factory=set)
    """Fake families in the training data (without the held-out ones)."""
    all_methods: set[str] = dataclasses.field(default_factory=set)
    """Fake families in the training data, held-out ones included."""


def run_chain(cfg: TrainConfig) -> StageChain:
    """The stage chain of a run: the chain file with the run's ``stage_overrides`` applied."""
    chain = StageChain.load(cfg.stages_file)
    for name, changes in cfg.stage_overrides.items():
        stage = chain.get(name)
        chain = chain.with_stage(from_dict(StageRecipe, {**to_dict(stage), **changes}, f"stage_overrides.{name}"))
    return chain


def is_complete(storage: Storage, name: str, specialist: str, stage: str) -> bool:
    return storage.exists(*layout.final_parts(name, specialist, stage), layout.COMPLETE_FILE)


def _sweep_hparams(storage: Storage, cfg: TrainConfig, stage: str, specialist: str) -> dict:
    if not cfg.from_sweep:
        return {}
    parts = layout.best_config_parts(cfg.name, cfg.from_sweep)
    if not storage.exists(*parts):
        raise ConfigError(f"from_sweep {cfg.from_sweep!r}: no finished sweep at {storage.display(*parts)}")
    best = storage.read_json(*parts)
    if best.get("stage") != stage:
        return {}
    return best.get("best", {}).get(specialist, {}).get("hparams", {})


def hold_out_filter(hold_out: list[str]):
    """The pyarrow filter that keeps real clips and the fakes of families not held out (``None``: keep all)."""
    if not hold_out:
        return None
    return (pc.field("label") == 0) | ~pc.field("method").isin(list(hold_out))


def _count_labels(files: list[str], endpoint: str | None = None, hold_out: list[str] | None = None
                  ) -> tuple[dict[int, int], set[str], set[str], set[str]]:
    """Label counts over ``files`` (held-out fakes left out), the stage filters (``preprocessing``)
    their clips were prepared with, and the families of their fakes: held-out ones left out, and all."""
    def read(f: str) -> pa.Table:
        p = FsPath.of(f, endpoint)
        return pq.read_table(p.path, filesystem=p.fs, columns=["label", "method", "preprocessing"])

    counts: dict[int, int] = {0: 0, 1: 0}
    kinds: set[str] = set()
    methods: set[str] = set()
    present: set[str] = set()
    keep = hold_out_filter(hold_out or [])
    for t in map_files(read, files):
        kinds |= set(t.column("preprocessing").unique().to_pylist())
        present |= set(t.filter(pc.equal(t.column("label"), 1)).column("method").unique().to_pylist())
        t = t.filter(keep) if keep is not None else t
        for c, n in zip(*np.unique(t.column("label").to_numpy(), return_counts=True)):
            counts[int(c)] = counts.get(int(c), 0) + int(n)
        methods |= set(t.filter(pc.equal(t.column("label"), 1)).column("method").unique().to_pylist())
    return counts, kinds, methods, present


def _clip_shape(files: list[str], endpoint: str | None = None) -> tuple[int, int]:
    for f in files:
        p = FsPath.of(f, endpoint)
        t = pq.read_table(p.path, filesystem=p.fs, columns=["num_frames", "size"])
        if t.num_rows:
            return int(t.column("num_frames")[0].as_py()), int(t.column("size")[0].as_py())
    raise ConfigError(f"shards hold no clips: {files[0] if files else '(none)'}")


def _check_run(cfg: TrainConfig, storage: Storage) -> None:
    try:
        storage.check_writable(cfg.name)
    except StorageError as e:
        raise ConfigError(str(e)) from None
    if cfg.num_workers < 1 and cfg.use_gpu:
        raise ConfigError("use_gpu needs num_workers >= 1")
    if not isinstance(logging.getLevelName(str(cfg.train_log_level).upper()), int):
        raise ConfigError(f"train_log_level {cfg.train_log_level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")


def _shard_folder(cfg: TrainConfig, stage: StageRecipe) -> FsPath:
    """The stage's shard folder (local or ``s3://``), checked to exist and to be readable."""
    folder = cfg.shards.get(stage.dataset)
    if not folder:
        raise ConfigError(f"stage {stage.name}: no shard folder given for dataset {stage.dataset!r} "
                          f"(set shards.{stage.dataset})")
    try:
        check_location(folder, cfg.s3_endpoint, f"stage {stage.name}: shard folder")
        found = FsPath.of(folder, cfg.s3_endpoint)
        if not found.is_dir():
            raise ConfigError(f"stage {stage.name}: shard folder for {stage.dataset!r} not found: {folder}")
    except LocationError as e:
        raise ConfigError(str(e)) from None
    return found


def stage_shards(cfg: TrainConfig, stage: StageRecipe) -> StageShards:
    """The stage's shard files (local paths or ``s3://`` URIs), with the training files split into the
    stage's chunks (fewer when the data has fewer chunks: the recipe is adjusted and the change
    printed). Shards prepared with another filter than the recipe's ``preprocessing`` are refused."""
    folder = _shard_folder(cfg, stage)
    train_all = [str(p) for p in list_complete_shards(folder, split="train")]
    val = [str(p) for p in list_complete_shards(folder, split="val")]
    test = [str(p) for p in list_complete_shards(folder, split="test")]
    if not train_all or not val:
        raise ConfigError(f"stage {stage.name}: {folder} has no complete train/val shards "
                          f"(run interceptor prepare first)")
    chunk_ids = sorted({parse_shard_name(p)["chunk"] or 0 for p in train_all})
    groups = [g for g in np.array_split(np.array(chunk_ids), min(stage.chunks, len(chunk_ids))) if len(g)]
    train_files = [[p for p in train_all if (parse_shard_name(p)["chunk"] or 0) in {int(c) for c in g}]
                   for g in groups] if stage.chunks > 1 else [train_all]
    if len(train_files) != stage.chunks:
        print(f"[plan] stage {stage.name}: {len(chunk_ids)} data chunk(s) for {stage.chunks} planned: "
              f"training {len(train_files)} chunk(s)", file=sys.stderr)
        stage = stage.replace(chunks=len(train_files))
    first = FsPath.of(train_all[0], cfg.s3_endpoint)
    outdated = outdated_schema(pq.read_schema(first.path, filesystem=first.fs).names)
    if outdated:
        raise ConfigError(f"stage {stage.name}: the shards in {folder} were {outdated}")
    num_frames, size = _clip_shape(train_all, cfg.s3_endpoint)
    counted = [_count_labels(files, cfg.s3_endpoint, cfg.hold_out) for files in train_files]
    counts = [c[0] for c in counted]
    kinds = sorted(set().union(*(c[1] for c in counted)))
    if kinds != [stage.preprocessing.value]:
        raise ConfigError(f"stage {stage.name}: the shards in {folder} were prepared with preprocessing "
                          f"{', '.join(kinds)}, but the stage's recipe uses {stage.preprocessing.value} "
                          f"(prepare them with --preprocessing {stage.preprocessing.value})")
    for i, c in enumerate(counts):
        if min(c.get(0, 0), c.get(1, 0)) == 0:
            held = f" once {', '.join(cfg.hold_out)} is held out" if cfg.hold_out else ""
            raise ConfigError(f"stage {stage.name}: training chunk {i} lacks a class{held} (label counts {c})")
    return StageShards(stage, train_files, val, test, counts, num_frames, size,
                       set().union(*(c[2] for c in counted)), set().union(*(c[3] for c in counted)))


def _recorded_methods(storage: Storage, init_parts: list[str] | None, external: str | None) -> set[str] | None:
    """The families a checkpoint records it was trained on (``extra.trained_methods`` of its
    ``meta.json``); ``None`` when it records none (a checkpoint from before these records)."""
    try:
        if external:
            meta = json.loads((Path(external) / layout.META_FILE).read_text())
        else:
            meta = storage.read_json(*init_parts, layout.META_FILE)
    except (OSError, ValueError):
        return None
    recorded = (meta.get("extra") or {}).get("trained_methods")
    return None if recorded is None else set(recorded)


def _trained_methods(storage: Storage, stage: StageRecipe, own: set[str], init: tuple[list[str] | None, str | None],
                     planned: dict[tuple[str, str], set[str] | None], key: str) -> set[str] | None:
    """The fake families a (specialist, stage) is trained on through its chain: the stage's own
    (held-out ones left out) and its predecessor's, taken from this run's plan when the predecessor
    is trained in this run, else from the predecessor's checkpoint; ``None`` when that checkpoint
    records nothing (then ``evaluate`` marks nothing)."""
    init_parts, external = init
    if init_parts is None and external is None:
        return set(own)
    prev = (key, stage.init_from)
    inherited = planned[prev] if prev in planned else _recorded_methods(storage, init_parts, external)
    return None if inherited is None else set(own) | inherited


def _init_source(cfg: TrainConfig, storage: Storage, chain: StageChain, stage: StageRecipe, key: str,
                 trained_here: set[str]) -> tuple[list[str] | None, str | None]:
    """(storage parts, external folder) of the checkpoint a stage initialises from (both None: none)."""
    if not stage.init_from:
        return None, None
    prev = chain.get(stage.init_from).name
    if cfg.init_checkpoints.get(stage.name):
        external = cfg.init_checkpoints[stage.name].replace("{specialist}", key)
        if not Path(external).exists():
            raise ConfigError(f"stage {stage.name}: init checkpoint {external} not found")
        return None, external
    if prev in trained_here or is_complete(storage, cfg.name, key, prev):
        return list(layout.final_parts(cfg.name, key, prev)), None
    raise ConfigError(
        f"stage {stage.name}: its predecessor {prev!r} has no final checkpoint for {key!r} in "
        f"{storage.display(cfg.name)} and no init_checkpoints.{stage.name} override")


#: a first stage below this learning rate is fine-tuning: refused from random backbone weights
FINE_TUNING_LR = 1e-3


def check_backbone_weights(cfg: TrainConfig, jobs: list[Job]) -> None:
    """The backbone weights of the jobs that start from no checkpoint (a chain's first stage), checked
    on the driver: ``model.weights_file`` must exist, ``model.pretrained`` weights must be cached or
    downloadable (nothing is downloaded here), and a fine-tuning lr from random weights is refused
    unless ``model.allow_random_init``. One-line ``ConfigError``s."""
    import pyarrow.fs as pafs

    from data_pipeline.filesystems import resolve
    from specialists.model import check_pretrained_available
    from specialists.registry import SpecialistError

    model = cfg.model
    first = [j for j in jobs if j.init_parts is None and j.init_external is None]
    if not first:
        return
    if model.weights_file:
        try:
            fs, path = resolve(model.weights_file, cfg.s3_endpoint)
            found = fs.get_file_info(path).type == pafs.FileType.File
        except OSError as e:
            raise ConfigError(f"model.weights_file {model.weights_file}: cannot be read "
                              f"({(str(e).strip().splitlines() or [type(e).__name__])[0]})") from None
        if not found:
            raise ConfigError(f"model.weights_file not found: {model.weights_file}")
    elif model.pretrained:
        try:
            check_pretrained_available(model.backbone)
        except SpecialistError as e:
            raise ConfigError(str(e)) from None
    elif not model.allow_random_init:
        for j in first:
            if j.recipe.lr < FINE_TUNING_LR:
                raise ConfigError(
                    f"stage {j.recipe.name}: {j.specialist} would fine-tune (lr {j.recipe.lr:g}) from random "
                    f"backbone weights (no predecessor checkpoint, no model.weights_file, model.pretrained "
                    f"false); give weights with model.pretrained: true (timm's, through the Hugging Face "
                    f"cache) or model.weights_file: PATH|s3://bucket/key, or set model.allow_random_init: "
                    f"true to train from scratch on purpose")


def plan(cfg: TrainConfig, skip_complete: bool = True
         ) -> tuple[Storage, list[tuple[StageRecipe, list[Job], list[str]]]]:
    """Validate the run and list the work, before any worker starts.

    Returns the storage and, per stage in chain order, the jobs to train and the specialists
    skipped because they are already complete (none when ``skip_complete`` is false, as for a sweep
    of a stage the chain has already trained). Bad configs raise one-line ``ConfigError``s.
    """
    keys = cfg.specialists or list_specialists()
    for k in keys:
        get_spec(k)
    chain = run_chain(cfg)
    stages = chain.select(cfg.stages)
    storage = Storage(cfg.storage_path, cfg.s3_endpoint)
    _check_run(cfg, storage)
    planned = []
    trained_here = {s.name for s in stages}
    methods: dict[tuple[str, str], set[str] | None] = {}
    present: set[str] = set()
    for stage in stages:
        data = stage_shards(cfg, stage)
        stage = data.stage
        present |= data.all_methods
        jobs, skipped = [], []
        for key in keys:
            if skip_complete and is_complete(storage, cfg.name, key, stage.name):
                skipped.append(key)
                continue
            init_parts, external = _init_source(cfg, storage, chain, stage, key, trained_here)
            trained = methods[(key, stage.name)] = _trained_methods(storage, stage, data.methods, (init_parts, external),
                                                                    methods, key)
            hp = _sweep_hparams(storage, cfg, stage.name, key)
            recipe = stage.replace(**hp) if hp else stage
            model = dataclasses.replace(cfg.model, specialist=key, image_size=data.size, num_frames=data.num_frames)
            jobs.append(Job(key, recipe, model, data.train_files, data.val, data.test, data.counts,
                            init_parts, external, list(cfg.hold_out), None if trained is None else sorted(trained)))
        planned.append((stage, jobs, skipped))
    unknown = sorted(set(cfg.hold_out) - present)
    if unknown:  # most likely a typo: holding out nothing would quietly train on the family
        raise ConfigError(f"hold_out: no training fake of {', '.join(unknown)} in the shards of stage(s) "
                          f"{', '.join(s.name for s in stages)}; their families: {', '.join(sorted(present)) or 'none'}")
    check_backbone_weights(cfg, [j for _, jobs, _ in planned for j in jobs])
    return storage, planned
