"""The Ray Data side of training: the streams a stage's trainer reads, and this process' Ray Data settings."""

from __future__ import annotations

from collections.abc import Sequence

from data_pipeline.batch import MODEL_INPUT_COLUMNS
from data_pipeline.filesystems import is_s3, resolve
from ray_jobs.config import ConfigError, TrainConfig
from ray_jobs.plan import Job, hold_out_filter

TRAIN_COLUMNS = [*MODEL_INPUT_COLUMNS, "face_box"]  # the face box places a pseudo-fake's blend in the grid patch
TEST_COLUMNS = [*TRAIN_COLUMNS, "video_id", "face_index"]


def configure_ray_data(preserve_order: bool = False) -> None:
    """Ray Data settings for this process' datasets: quiet progress, and the V1 Parquet reader,
    whose tasks honour ``data_cpus`` (V2's file-listing task asks for a whole CPU, which stalls
    on small machines where training workers hold fractional CPUs); ``preserve_order``: see
    :attr:`TrainConfig.preserve_order`."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.use_datasource_v2 = False
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = preserve_order


def parquet_source(files: Sequence[str], endpoint: str | None = None) -> dict:
    """``read_parquet`` arguments for shard files given as local paths or ``s3://`` URIs (one kind per
    list): the paths as the filesystem sees them and, for S3, the filesystem itself (it pickles
    without credentials: each Ray Data task on whichever node resolves its own)."""
    if not files:
        return {"paths": []}
    if len({is_s3(f) for f in files}) > 1:
        raise ConfigError("shards to read at once must all be local or all in S3, not both: " + ", ".join(
            sorted({str(f).rsplit("/", 1)[0] for f in files})))
    fs = resolve(files[0], endpoint)[0]
    return {"paths": [resolve(f, endpoint)[1] for f in files], "filesystem": fs}


def build_datasets(job: Job, cfg: TrainConfig) -> dict:
    """``train_<chunk>`` per training chunk and ``val``, each a Parquet stream of the stage's shards
    (or, with ``cache_shards``, read once into the object store)."""
    import ray.data
    from ray.data import FileShuffleConfig, RandomSeedConfig

    configure_ray_data(cfg.preserve_order)
    read_args = {"num_cpus": cfg.data_cpus, "columns": TRAIN_COLUMNS}
    keep = hold_out_filter(job.hold_out)
    if keep is not None:  # leave-one-family-out: the held-out fakes never reach training or validation
        read_args["filter"] = keep
    datasets = {}

    # seeded, and reseeded with every execution (epoch): another order each epoch, the same
    # orders in every run
    def read(files: list[str], shuffle: bool):
        source = parquet_source(files, cfg.s3_endpoint)
        if not cfg.cache_shards:
            return ray.data.read_parquet(**source, shuffle=FileShuffleConfig(seed=cfg.seed) if shuffle else None,
                                         **read_args)
        ds = ray.data.read_parquet(**source, **read_args).materialize()
        return ds.randomize_block_order(seed=RandomSeedConfig(seed=cfg.seed)) if shuffle else ds

    for i, files in enumerate(job.train_files):
        datasets[f"train_{i}"] = read(files, shuffle=True)  # class balancing: in the worker
    datasets["val"] = read(job.val_files, shuffle=False)
    return datasets
