"""docker/: the images' pins agree with pyproject.toml; the build context holds what they copy.

No Docker engine runs on the development machine, so the images are not built here: these tests
read the Dockerfiles, and run the API image's HEALTHCHECK script against a real HTTP server.
"""

from __future__ import annotations

import fnmatch
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rendered import REPO, pinned, pyproject

from orchestrator.settings import Settings

API = REPO / "docker" / "api.Dockerfile"
WORKER = REPO / "docker" / "ray-worker.Dockerfile"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    out = {}
    for word, rest in instructions(dockerfile):
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            out[name] = value
    return out


def base_images(dockerfile: Path) -> list[str]:
    args = arg_defaults(dockerfile)
    froms = [rest.split()[0] for word, rest in instructions(dockerfile) if word == "FROM"]
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], f) for f in froms]


def copied_sources(dockerfile: Path) -> list[str]:
    out = []
    for word, rest in instructions(dockerfile):
        if word == "COPY" and "--from=" not in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            out.extend(parts[:-1])
    return out


def ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip().lstrip("/") for line in lines if line.strip() and line[0] != "#"]


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (or a folder above it) out of the build context."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in ignore_patterns():
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(Path(prefix).name, bare):
                return True
    return False


def test_worker_image_is_the_pinned_ray_on_python_311_gpu() -> None:
    args = arg_defaults(WORKER)
    assert args["RAY_VERSION"] == pinned("ray")
    assert base_images(WORKER) == [f"rayproject/ray:{pinned('ray')}-py311-gpu"]
    assert args["TORCH_VERSION"] == pinned("torch")
    assert re.fullmatch(r"cu\d{3}", args["TORCH_CUDA"]), "a CUDA wheel index of PyTorch"


def test_api_image_is_slim_python_311_with_cpu_torch() -> None:
    args = arg_defaults(API)
    assert args["PYTHON_VERSION"].startswith("3.11.")
    for image in base_images(API):
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    assert args["TORCH_VERSION"] == pinned("torch")
    assert "https://download.pytorch.org/whl/cpu" in API.read_text()
    assert pyproject()["project"]["requires-python"] == ">=3.11"


def test_api_image_runs_pdistill_serve_as_a_user_with_a_healthcheck() -> None:
    steps = instructions(API)
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    words = {word: rest for word, rest in final}
    assert words["ENTRYPOINT"] == '["pdistill"]' and words["CMD"] == '["serve"]'
    user = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults(API)[m[1]], words["USER"])
    assert re.fullmatch(r"[1-9]\d*:\d+", user), f"a numeric non-root user, not {user!r}"
    assert "healthcheck.py" in words["HEALTHCHECK"]
    assert int(words["EXPOSE"]) == Settings.model_fields["api_port"].default
    assert "pdistill" in pyproject()["project"]["scripts"]


def test_worker_image_runs_as_the_ray_user() -> None:
    users = [rest for word, rest in instructions(WORKER) if word == "USER"]
    assert users and users[-1] == "1000:100"


@pytest.mark.parametrize("dockerfile", [API, WORKER], ids=lambda p: p.name)
def test_images_copy_every_package_and_nothing_ignored(dockerfile: Path) -> None:
    sources = copied_sources(dockerfile)
    packages = [
        p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for package in packages:
        assert package in sources, f"{dockerfile.name} does not copy the package {package}/"
    for required in ("pyproject.toml", "README.md"):  # setuptools reads both
        assert required in sources
    for source in sources:
        assert (REPO / source).exists(), f"{dockerfile.name} copies missing {source}"
        assert not ignored(source), f".dockerignore keeps {source} out of the context"


def test_build_context_leaves_out_the_heavy_and_the_private() -> None:
    for path in (".venv", ".git", "runs", "mlruns", "pdistill.egg-info", "tests"):
        assert ignored(path), path


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(port: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDISTILL_")}
    env["PDISTILL_API_PORT"] = str(port)
    proc = subprocess.run(
        [sys.executable, str(REPO / "docker" / "healthcheck.py")],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=30,
    )
    return proc.returncode


def test_healthcheck_follows_healthz(health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server
    assert run_healthcheck(port) == 0
    handler.status = 503
    assert run_healthcheck(port) == 1


def test_healthcheck_fails_when_nothing_listens() -> None:
    # A port held (bound, never listening) by this test: connections to it are refused.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        assert run_healthcheck(held.getsockname()[1]) == 1
