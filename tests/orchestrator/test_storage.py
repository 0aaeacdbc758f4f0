"""Campaign storage: objects read in pieces (how the API sends a checkpoint on), folders listed
and removed; on a local directory, and S3 on moto_server."""

import boto3
import pytest

from orchestrator.storage import Storage


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "store"))
    request.getfixturevalue("s3_endpoint")
    boto3.client("s3").create_bucket(Bucket="pdistill-storage")
    return Storage("s3://pdistill-storage/root")


def test_an_object_is_read_in_pieces_and_a_missing_one_is_none(storage: Storage) -> None:
    data = bytes(range(256)) * (10 * 1024 + 3)  # 2.5 MiB and a bit
    storage.write_bytes("round-1/student.safetensors", data)
    found = storage.read_chunks("round-1/student.safetensors", chunk=1 << 20)
    assert found is not None
    size, chunks = found
    pieces = list(chunks)
    assert size == len(data) and [len(p) for p in pieces] == [
        1 << 20,
        1 << 20,
        len(data) - (2 << 20),
    ]
    assert b"".join(pieces) == data
    assert storage.read_chunks("round-1/missing.safetensors") is None
    assert storage.read_chunks("round-1") is None  # a folder is not an object


def test_a_folder_is_listed_and_removed_with_everything_under_it(storage: Storage) -> None:
    for rel in ("ray/c-round-1/checkpoint_a/updater.pt", "ray/c-round-1/state.json",
                "ray/c-round-1-trial-0/checkpoint_b/updater.pt", "ray/c-round-10/x.json",
                "ray/top.json", "round-1/student.safetensors"):  # fmt: skip
        storage.write_bytes(rel, b"x")
    assert storage.list("ray", folders=True) == ["c-round-1", "c-round-1-trial-0", "c-round-10"]
    assert storage.list("ray") == ["top.json"]
    storage.delete("ray/c-round-1", tree=True)
    storage.delete("ray/c-round-1", tree=True)  # gone already: not an error
    storage.delete("ray/never-made", tree=True)
    assert storage.list("ray", folders=True) == ["c-round-1-trial-0", "c-round-10"]
    assert storage.read_bytes("ray/c-round-1/state.json") is None
    assert storage.read_bytes("ray/c-round-10/x.json") == b"x"
    assert storage.read_bytes("round-1/student.safetensors") == b"x"


def test_a_finished_round_drops_its_own_ray_runs_only(tmp_path) -> None:
    from orchestrator.settings import Settings
    from orchestrator.spec import parse_spec
    from orchestrator.stages import Campaign

    model = {"preset": "digits-small"}
    spec = parse_spec({"name": "c", "dataset": "builtin:digits", "model": model})
    c = Campaign(spec, Settings(storage_uri=str(tmp_path / "store")))
    for run in ("c-round-1", "c-round-1-trial-0", "c-round-1-tune", "c-round-10", "c-round-2"):
        c.storage.write_bytes(c.rel(f"ray/{run}/checkpoint_0/updater.pt"), b"x")
    c.drop_ray_runs(c.plan[0])
    assert c.storage.list(c.rel("ray"), folders=True) == ["c-round-10", "c-round-2"]
    # A storage that fails here fails no stage: the next run of the stage tries again.
    c.storage.delete(c.rel("ray"), tree=True)
    c.storage.write_bytes(c.rel("ray"), b"a file where the folder should be")
    with pytest.warns(UserWarning, match="round 2: its Ray runs stay in storage: cannot list"):
        c.drop_ray_runs(c.plan[1])
