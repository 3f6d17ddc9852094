"""The packaged demo config parses into its typed configs and its recipes apply to the chain."""

from data_pipeline import synthetic
from ray_jobs.config import CONFIG_DIR, TrainConfig, from_dict, load_yaml
from ray_jobs.demo_steps import DemoConfig
from ray_jobs.plan import run_chain
from ray_jobs.sharding import PrepareConfig
from specialists.losses import LossKind


def test_demo_config_is_typed_and_applies_to_the_chain():
    cfg = from_dict(DemoConfig, load_yaml(CONFIG_DIR / "demo.yaml"))
    scale = synthetic.config_for_scale(cfg.synthetic.scale, seed=cfg.synthetic.seed)
    assert scale.dfdc_parts % cfg.readers["dfdc"]["parts_per_chunk"] == 0
    for ds in ("ffpp", "celebdf", "dfdc"):
        from_dict(PrepareConfig, {**cfg.prepare, "dataset": ds, "root": "r", "out": "o",
                                  "reader": cfg.readers.get(ds, {})})
    tcfg = from_dict(TrainConfig, {**cfg.train, "shards": {}, "storage_path": "runs"})
    chain = run_chain(tcfg)
    dfdc = chain.get("dfdc")
    assert dfdc.chunks == scale.dfdc_parts // cfg.readers["dfdc"]["parts_per_chunk"]
    assert dfdc.loss is LossKind.CROSS_ENTROPY and dfdc.augmentation.is_identity
    assert chain.get("ffpp").preprocessing.value == "resize"  # the stage filters stay the chain's
    assert tcfg.model.allow_random_init  # the tiny backbone trains from scratch on purpose
