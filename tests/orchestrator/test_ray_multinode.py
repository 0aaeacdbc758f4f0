"""A campaign on a 2-node Ray cluster (`ray.cluster_utils.Cluster`): every node is its own raylet
with its own object store and temp dir, the head runs no work, and checkpoints, stage records
and reference statistics go through the S3 endpoint, so nothing relies on a disk the nodes share.

It runs in a subprocess: one process can be connected to only one Ray cluster, and the session's
local cluster is already connected here.
"""

import json
import subprocess
import sys

import boto3

SPEC = {
    "name": "ray-multinode",
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    "diffusion": {"output": "v", "weighting": "snr_plus_one"},
    "teacher": {"train": {"updates": 30, "batch_size": 32, "warmup_updates": 5}},
    "steps": {"start": 2, "target": 1},
    "distill": {"updates": 40, "batch_size": 32, "checkpoint_every": 20},
    "resources": {"workers": 2, "max_failures": 1},
    "evaluation": {"samples": 32, "batch_size": 32},
}

DRIVER = """
import json, os, sys, time
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors, list_tasks
from orchestrator.campaign import run_campaign
from orchestrator.ray_head import free_port
from orchestrator.settings import Settings
from orchestrator.spec import parse_spec

spec, settings = json.loads(sys.argv[1]), Settings.model_validate_json(sys.argv[2])
# Its own state API (see orchestrator.ray_cluster.init_local): the session's cluster runs too.
port = free_port()
os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 0, "include_dashboard": True, "dashboard_port": port},
)
for _ in range(2):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
try:
    report = run_campaign(parse_spec(spec), settings, poll_s=0.5)
    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=100)
    # A task's node reaches the state API with its events, a moment after it ran.
    for _ in range(60):
        tasks = list_tasks(detail=True, limit=1000)
        stages = [t for t in tasks if t.name.startswith(("round-", "report"))]
        if all(t.node_id for t in stages):
            break
        time.sleep(0.5)
    controllers = list_actors(filters=[("class_name", "=", "TrainController")], detail=True)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    head = cluster.head_node.node_id
    print("RESULT " + json.dumps({
        "report": report,
        "worker_nodes": sorted({a.node_id for a in workers}),
        "stage_nodes": {t.name: t.node_id for t in stages},
        "controller_nodes": sorted({a.node_id for a in controllers}),
        "nodes": nodes,
        "head": head,
    }))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_campaign_on_two_nodes_keeps_everything_on_s3(settings, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(SPEC), settings.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert len(result["nodes"]) == 3  # the head and two worker nodes
    # The two DDP ranks ran on the two worker nodes, none on the head.
    assert len(result["worker_nodes"]) == 2 and result["head"] not in result["worker_nodes"]
    # The tasks that drive the round's Tune and Train jobs (and the report) ran beside the
    # driver, on the head, and so did the Train controller they started: a worker node that is
    # scaled down or lost takes none of them with it. (Ray's default placement of a task that
    # asks for no CPUs put them there too on this cluster; the pin makes it a rule.)
    stages = result["stage_nodes"]
    assert set(stages) == {"round-1-tune", "round-1-train", "round-1-eval", "report"}, stages
    assert {stages[k] for k in ("round-1-tune", "round-1-train", "report")} == {result["head"]}
    assert result["controller_nodes"] == [result["head"]], result
    report = result["report"]
    assert [r["steps"] for r in report["rounds"]] == [1]
    assert report["rounds"][0]["checkpoint"].startswith("s3://pdistill-test/store/")
    keys = {
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(
            Bucket="pdistill-test", Prefix="store/campaigns/ray-multinode/"
        )["Contents"]
    }
    prefix = "store/campaigns/ray-multinode/"
    assert {f"{prefix}teacher.safetensors", f"{prefix}round-1/student.safetensors"} <= keys
    # Train's own checkpoints (the ones a restarted worker resumes from) were on S3 too, and
    # are gone once the round's student is stored.
    record = json.loads(
        boto3.client("s3")
        .get_object(Bucket="pdistill-test", Key=f"{prefix}stages/round-1-train.json")["Body"]
        .read()
    )
    run = f"s3://pdistill-test/{prefix}ray/ray-multinode-round-1/"
    assert record["train_checkpoint"].startswith(f"{run}checkpoint_"), record
    assert [k for k in keys if k.startswith(f"{prefix}ray/")] == [f"{prefix}ray/"]  # a marker
