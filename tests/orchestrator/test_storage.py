"""Campaign storage read in pieces (how the API sends a checkpoint on): a local directory, and
S3 on moto_server."""

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
