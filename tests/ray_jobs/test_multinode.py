"""The train job on two Ray nodes: trainers spread over both, and the job survives losing one.

The second node joins the session's head (``ray start --address``, its own CPUs and a marker
resource, on 127.0.0.1); its raylet is killed mid-stage, as a preempted cloud node would vanish:
its training worker, and the chain driver (Tune trial) if it ran there, are lost. A lost worker is
the general case of a killed one, so this test also covers worker replacement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, free_port
from tests.ray_jobs.test_train_ray import final_dir, make_config, start_train, wait_for

pytestmark = pytest.mark.ray
MARKER = "interceptor_test_second_node"


def _raylet_of(marker: str) -> tuple[int, str] | None:
    """(pid, node id) of the raylet whose static resources name ``marker`` (from ``/proc``)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:  # the process ended meanwhile
            continue
        if args[0].endswith("/raylet") and any(marker in a for a in args):
            return int(cmdline.parent.name), next(a.split("=", 1)[1] for a in args if a.startswith("--node_id="))
    return None


@pytest.fixture
def second_node(ray_head):
    """A second Ray node with 2 CPUs joined to the session's head; yields (raylet pid, node id)."""
    ports = {flag: str(free_port()) for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                 "--metrics-export-port", "--runtime-env-agent-port")}
    cmd = [str(BIN / "ray"), "start", "--address", ray_head["gcs"], "--node-ip-address", "127.0.0.1",
           "--num-cpus", "2", "--resources", json.dumps({MARKER: 1}), "--disable-usage-stats",
           *[x for kv in ports.items() for x in kv]]
    out = subprocess.run(cmd, env=ray_head["env"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    deadline = time.time() + 30
    while (found := _raylet_of(MARKER)) is None and time.time() < deadline:
        time.sleep(0.5)
    assert found, f"the second node's raylet is not running: {out.stdout[-2000:]}"
    try:
        yield found
    finally:
        if _raylet_of(MARKER):
            os.kill(found[0], signal.SIGKILL)


def _epochs_on(run_dir, node: str) -> bool:
    """Whether a checkpoint of ``run_dir`` has an epoch trained on ``node`` and Ray Train has
    registered a checkpoint of the run (only registered ones are restored after a failure)."""
    try:
        if not json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text()).get("latest_checkpoint_result"):
            return False
    except (OSError, json.JSONDecodeError):  # not written yet, or being rewritten
        return False
    for meta in run_dir.glob("checkpoint_*/meta.json"):
        try:
            history = json.loads(meta.read_text()).get("history", [])
        except (OSError, json.JSONDecodeError):  # being written
            continue
        if any(node in h.get("nodes", []) for h in history):
            return True
    return False


def test_trainers_spread_over_two_nodes_and_survive_losing_one(ray_head, second_node, tmp_path):
    raylet_pid, node2 = second_node
    epochs = 6
    # 1.5 CPUs per worker: one trainer per 2-CPU node, so the two specialists' trainers spread
    config = make_config(tmp_path, "twonode", ["cm", "rr"], stages=["ffpp", "celebdf"], cpus_per_worker=1.5,
                         data_cpus=0.1, stage_overrides={"ffpp": {"epochs": epochs, "lr": 3.0e-3}})
    log = tmp_path / "twonode.log"
    proc = start_train(config, ray_head["gcs"], log)
    runs = tmp_path / "runs" / "twonode"
    on_node2 = wait_for(lambda: next((k for k in ("cm", "rr") if _epochs_on(runs / f"{k}-ffpp", node2)), None),
                        proc, 600, "an epoch trained on the second node")
    os.kill(raylet_pid, signal.SIGKILL)  # the node is gone: its workers, and any chain driver there
    killed_at = time.time()
    assert proc.wait(timeout=900) == 0, log.read_text()[-5000:]

    nodes_seen = set()
    for key in ("cm", "rr"):
        for stage, total in (("ffpp", epochs), ("celebdf", 1)):
            done = json.loads((final_dir(tmp_path, "twonode", key, stage) / "COMPLETE.json").read_text())
            assert [h["epoch"] for h in done["history"]] == list(range(1, total + 1)), (key, stage)
            nodes_seen |= {n for h in done["history"] for n in h["nodes"]}
    assert node2 in nodes_seen and len(nodes_seen) == 2, nodes_seen
    # the trainer that lost its node went on elsewhere, from a checkpoint, not from scratch
    history = json.loads((final_dir(tmp_path, "twonode", on_node2, "ffpp") / "COMPLETE.json").read_text())["history"]
    assert history[-1]["nodes"] != [node2], history
    text = log.read_text()
    assert f"[{on_node2}-ffpp] resumed at epoch" in text, text[-5000:]
    # scored by the workers if the restarted one saw the best epoch, else from the export: either
    # way the test scores belong to the exported checkpoint
    done = json.loads((final_dir(tmp_path, "twonode", on_node2, "ffpp") / "COMPLETE.json").read_text())
    assert done["test_scored_epoch"] == done["selected_epoch"] and 0.0 <= done["test_auc"] <= 1.0
    print(f"job finished {time.time() - killed_at:.0f} s after the node was killed")
