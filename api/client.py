"""A small client of the HTTP API (httpx), used by the `pdistill` commands."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx


class ApiError(Exception):
    """The API answered with an error, or could not be reached. `exit_code`: 2 for a request
    the caller can fix (bad spec, unknown id, bad token), 1 for everything else."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def exit_code(self) -> int:
        return (
            2 if self.status is not None and 400 <= self.status < 500 and self.status != 409 else 1
        )


def _problem(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return json.dumps(body)[:1000]


def _raise_for_status(resp: httpx.Response, method: str, path: str) -> None:
    if resp.status_code >= 400:
        resp.read()  # a streamed answer: its problem text is in the body
        raise ApiError(
            f"{method} {path}: {resp.status_code} {_problem(resp)}", status=resp.status_code
        )


class Client:
    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the API at {self.url}: {exc}") from exc
        _raise_for_status(resp, method, path)
        return resp

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._send("GET", path, params=clean).json()

    def submit(
        self, spec: dict[str, Any], *, key: str | None = None, attempts: int = 3
    ) -> dict[str, Any]:
        """POST the spec; retried on network errors under one Idempotency-Key (`key`, or a new
        one), so a retry never makes a second campaign."""
        key = key or str(uuid.uuid4())
        for attempt in range(attempts):
            try:
                resp = self._send(
                    "POST", "/v1/campaigns", json=spec, headers={"Idempotency-Key": key}
                )
                result: dict[str, Any] = resp.json()
                return result
            except ApiError as exc:
                if exc.status is not None or attempt == attempts - 1:
                    raise
                time.sleep(1.0 + attempt)
        raise AssertionError("unreachable")

    def cancel(self, campaign_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._send("POST", f"/v1/campaigns/{campaign_id}/cancel").json()
        return result

    def resume(self, campaign_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._send("POST", f"/v1/campaigns/{campaign_id}/resume").json()
        return result

    def logs(self, campaign_id: str, lines: int) -> str:
        return self._send("GET", f"/v1/campaigns/{campaign_id}/logs", params={"lines": lines}).text

    def download(
        self,
        path: str,
        out: Path | None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> tuple[Path, int]:
        """Stream the file at `path` to `out` (a file, or a directory for the server's file
        name; default: the working directory); returns where and how many bytes. It is written
        under a temporary name beside it and renamed when whole: a broken download leaves
        nothing behind, and never half a file under the final name. `progress(bytes so far,
        total or None)` is called after each piece."""
        try:
            with self.http.stream("GET", path, timeout=httpx.Timeout(30.0, read=300.0)) as resp:
                _raise_for_status(resp, "GET", path)
                named = re.search(
                    r'filename="([^"/\\]+)"', resp.headers.get("content-disposition", "")
                )
                name = named.group(1) if named else path.rstrip("/").rsplit("/", 1)[-1]
                dest = (out or Path.cwd()) / name if out is None or out.is_dir() else out
                fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
                try:
                    length = resp.headers.get("content-length")
                    total, done = (int(length) if length and length.isdigit() else None), 0
                    with os.fdopen(fd, "wb") as f:
                        for piece in resp.iter_bytes():
                            f.write(piece)
                            done += len(piece)
                            if progress is not None:
                                progress(done, total)
                    os.replace(tmp, dest)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot download {path} from the API at {self.url}: {exc}") from exc
        return dest, dest.stat().st_size

    def events(self, campaign_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event, data) pairs of the campaign's event stream until it ends."""
        path = f"/v1/campaigns/{campaign_id}/events"
        try:
            with self.http.stream("GET", path, timeout=httpx.Timeout(30.0, read=None)) as resp:
                _raise_for_status(resp, "GET", path)
                event = "message"
                data: list[str] = []
                for line in resp.iter_lines():
                    if line == "":
                        if data:
                            yield event, json.loads("\n".join(data))
                        event, data = "message", []
                    elif line.startswith("event:"):
                        event = line.removeprefix("event:").strip()
                    elif line.startswith("data:"):
                        data.append(line.removeprefix("data:").strip())
        except httpx.HTTPError as exc:
            raise ApiError(f"event stream of {campaign_id} broke: {exc}") from exc
