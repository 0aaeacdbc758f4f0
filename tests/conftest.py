from __future__ import annotations

import contextlib
import functools
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import torch

from orchestrator.ray_head import free_port

# Small tensors: OpenMP threads only spin against each other (and against a busy neighbour on a
# 2-core machine); one thread runs these tests many times faster.
torch.set_num_threads(1)


StopAfter = Callable[[Path, Callable[[], None]], Callable[[], None]]
_AT_DIRECTORY_END: list[tuple[Path, Callable[[], None]]] = []


@pytest.fixture(scope="session")
def stop_after_directory() -> StopAfter:
    """`(directory, stop)` → `stop`, run once: after the last test under `directory`, or at the
    session's end (the returned once-only `stop`, for the fixture's own teardown).

    For a Ray cluster shared by one folder's tests: left running, its processes would take the
    2 cores' time from every later test (pytest's "package" scope would do this, but only for
    folders with an __init__.py, which these cannot have)."""

    def register(directory: Path, stop: Callable[[], None]) -> Callable[[], None]:
        once = functools.cache(stop)
        _AT_DIRECTORY_END.append((directory, once))
        return once

    return register


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    for directory, stop in _AT_DIRECTORY_END:
        if directory in item.path.parents and (
            nextitem is None or directory not in nextitem.path.parents
        ):
            stop()


class TcpProxy:
    """A TCP relay on 127.0.0.1 that can go down and come back on the same port.

    All S3 traffic of the tests passes through it, so a test can take the S3 endpoint away as
    its clients see it (refused connections, cut transfers) without moto losing its objects.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        self.port = s.getsockname()[1]
        s.listen(128)
        with self._lock:
            self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                if self._listener is not listener:
                    return
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._conns -= {src, dst}


@pytest.fixture(scope="session")
def s3_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcpProxy]:
    """A real S3 HTTP endpoint (moto_server on 127.0.0.1) behind a TcpProxy, with AWS_* set for
    boto3/pyarrow pointing at the proxy."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    server = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answered, even if with an error status
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on {url}: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        proxy = TcpProxy(port)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.delenv("AWS_SESSION_TOKEN", raising=False)
            mp.delenv("AWS_PROFILE", raising=False)
            yield proxy
        proxy.stop()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_endpoint(s3_proxy: TcpProxy) -> str:
    """The S3 endpoint URL the tests' clients use (AWS_ENDPOINT_URL)."""
    return f"http://127.0.0.1:{s3_proxy.port}"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature networks and reference statistics, trained once per test session."""
    return tmp_path_factory.mktemp("cache")


# -- databases ------------------------------------------------------------------------------------
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"
PgSchemas = Callable[[], contextlib.AbstractContextManager[str]]


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[PgSchemas]:
    """A fresh database on the machine's PostgreSQL for this session, dropped at its end; the
    fixture is a factory of fresh schemas in it (`with pg_schemas() as url:`), each URL putting
    its schema first on the search path, so every test gets an empty store."""
    database = f"pdistill_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"the store tests need PostgreSQL at 127.0.0.1:5432 (user postgres): {exc}")

    @contextlib.contextmanager
    def schema() -> Iterator[str]:
        name = f"t_{secrets.token_hex(6)}"
        conninfo = PG_ADMIN.replace("dbname=test", f"dbname={database}")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
            try:
                yield (
                    f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
                    f"?options=-csearch_path%3D{name}"
                )
            finally:
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')

    with admin:
        admin.execute(f'CREATE DATABASE "{database}"')
        try:
            yield schema
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store's URL: a SQLite file, and a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with request.getfixturevalue("pg_schemas")() as url:
        yield url
