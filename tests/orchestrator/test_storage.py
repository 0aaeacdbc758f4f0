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
    storage.delete_tree("ray/c-round-1")
    storage.delete_tree("ray/c-round-1")  # gone already: not an error
    storage.delete_tree("ray/never-made")
    assert storage.list("ray", folders=True) == ["c-round-1-trial-0", "c-round-10"]
    assert storage.read_bytes("ray/c-round-1/state.json") is None
    assert storage.read_bytes("ray/c-round-10/x.json") == b"x"
    assert storage.read_bytes("round-1/student.safetensors") == b"x"
