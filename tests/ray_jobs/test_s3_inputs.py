"""Bad storage input gets one line each, before any worker starts (no Ray here): a bucket that does
not exist, a prefix with no videos or no shards, missing credentials, and shards prepared with
another stage filter than the stage's recipe. Against the moto S3 server on loopback."""

from __future__ import annotations

import time

import pytest

from data_pipeline.filesystems import FsPath
from ray_jobs.config import ConfigError, TrainConfig
from ray_jobs.evaluate import main as evaluate_main
from ray_jobs.plan import run_chain, stage_shards
from ray_jobs.prepare import main as prepare_main
from tests.helpers import write_learnable_shards

NO_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                  "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                  "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """The moto server's credentials in this process; ``forget()`` removes every credential source."""
    for k, v in {**s3_server["env"], "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)

    def forget() -> None:
        for k in NO_CREDENTIALS:
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))

    return {**s3_server, "forget": forget}


def one_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"interceptor {prog}: error: "), err
    return err


@pytest.mark.parametrize("root, message", [
    ("s3://no-such-bucket/dfdc", "prepare root s3://no-such-bucket/dfdc: bucket 'no-such-bucket' does not exist"),
    ("s3://interceptor/no-videos-here", "dfdc root 's3://interceptor/no-videos-here' holds no objects"),
    (None, "no AWS credentials found"),
])
def test_prepare_refuses_bad_storage_in_one_line(s3, tmp_path, capsys, root, message):
    if root is None:
        s3["forget"]()
        root = "s3://interceptor/videos"
    start = time.perf_counter()
    rc = prepare_main(["--dataset", "dfdc", "--root", root, "--out", "s3://interceptor/out-never-written",
                       "--s3-endpoint", s3["endpoint"]])
    assert rc == 2 and message in one_line(capsys, "prepare")
    assert time.perf_counter() - start < 10  # no waiting on an instance metadata service
    assert "Contents" not in s3["client"].list_objects_v2(Bucket="interceptor", Prefix="out-never-written")


def test_prepare_refuses_a_layout_without_videos(s3, capsys):
    s3["client"].put_object(Bucket="interceptor", Key="empty-dfdc/dfdc_train_part_0/metadata.json", Body=b"{}")
    rc = prepare_main(["--dataset", "dfdc", "--root", "s3://interceptor/empty-dfdc", "--out", "s3://interceptor/o",
                       "--s3-endpoint", s3["endpoint"]])
    assert rc == 2 and "s3://interceptor/empty-dfdc: no dfdc videos found" in one_line(capsys, "prepare")


def _stage(cfg: TrainConfig, name: str):
    return run_chain(cfg).get(name)


@pytest.mark.parametrize("folder, message", [
    ("s3://no-such-bucket/shards", "stage ffpp: shard folder s3://no-such-bucket/shards: bucket 'no-such-bucket' does not exist"),
    ("s3://interceptor/no-shards-here", "stage ffpp: shard folder for 'ffpp' not found: s3://interceptor/no-shards-here"),
    ("s3://interceptor/only-a-summary", "stage ffpp: s3://interceptor/only-a-summary has no complete train/val shards"),
    (None, "stage ffpp: shard folder s3://interceptor/only-a-summary: no AWS credentials found"),
])
def test_a_stage_refuses_bad_shard_storage_in_one_line(s3, folder, message):
    s3["client"].put_object(Bucket="interceptor", Key="only-a-summary/summary.json", Body=b"{}")
    if folder is None:
        s3["forget"]()
        folder = "s3://interceptor/only-a-summary"
    cfg = TrainConfig(shards={"ffpp": folder}, s3_endpoint=s3["endpoint"])
    with pytest.raises(ConfigError) as err:
        stage_shards(cfg, _stage(cfg, "ffpp"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_stage_refuses_shards_of_another_preprocessing(s3, tmp_path):
    """celebdf's recipe filters with CLAHE: resize shards are refused in one line naming both; the
    stage's own filter is accepted, from the bucket as from a local folder."""
    bucket_shards = "s3://interceptor/stage-filters/celebdf"
    write_learnable_shards(bucket_shards, dataset="celebdf", n_train=8, n_val=4, n_test=4, size=16,
                           preprocessing="resize", endpoint=s3["endpoint"])
    cfg = TrainConfig(shards={"celebdf": bucket_shards}, s3_endpoint=s3["endpoint"])
    with pytest.raises(ConfigError, match="prepared with preprocessing resize, but the stage's recipe uses clahe"):
        stage_shards(cfg, _stage(cfg, "celebdf"))
    local = write_learnable_shards(tmp_path / "celebdf", dataset="celebdf", n_train=8, n_val=4, n_test=4, size=16,
                                   preprocessing="clahe")
    cfg = TrainConfig(shards={"celebdf": str(local)})
    data = stage_shards(cfg, _stage(cfg, "celebdf"))
    assert (data.num_frames, data.size, data.counts) == (4, 16, [{0: 4, 1: 4}])
    assert not list((tmp_path).rglob("*.parquet.tmp")) and FsPath.of(bucket_shards, s3["endpoint"]).is_dir()


def test_evaluate_refuses_a_missing_bucket_in_one_line(s3, capsys):
    rc = evaluate_main(["--storage-path", "s3://no-such-bucket/runs", "--s3-endpoint", s3["endpoint"],
                        "--shards", "s3://interceptor/x"])
    assert rc == 2 and "storage s3://no-such-bucket/runs: bucket 'no-such-bucket' does not exist" in one_line(capsys, "evaluate")


def test_shards_of_an_older_schema_are_refused_in_one_line(tmp_path):
    """Shards written before the codec-grid and sync columns: `train` names the cause and the remedy."""
    import pyarrow.parquet as pq

    local = write_learnable_shards(tmp_path / "ffpp", n_train=8, n_val=4, n_test=4, size=16)
    for f in local.glob("*.parquet"):
        table = pq.read_table(f)
        pq.write_table(table.drop_columns(["grid", "grid_size", "sync", "sync_shape"]), f)
    cfg = TrainConfig(shards={"ffpp": str(local)})
    with pytest.raises(ConfigError, match=r"prepared before the codec-grid patch, the sync curves and the lighting "
                                          r"cues \(no grid column\); prepare them again"):
        stage_shards(cfg, _stage(cfg, "ffpp"))
