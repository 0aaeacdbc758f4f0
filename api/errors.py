"""Domain errors become HTTP answers here and nowhere else. Every 4xx body names the problem:
`{"detail": "..."}`, or for invalid input (422) `{"detail": [{loc, msg, type, input}], "message"}`
where `loc` names the field (`["body", "steps", "start"]`) and `msg` what is allowed."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.jobs import RayUnavailableError
from orchestrator.scheduler import ActionError
from orchestrator.storage import StorageError
from orchestrator.store import ConflictError, NotFoundError, TransitionError

log = logging.getLogger(__name__)


class InputError(Exception):
    """Bad input found by a route itself (not by FastAPI's parameter parsing): a 422 with the
    same shape as FastAPI's."""

    def __init__(self, errors: Sequence[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(e.get("msg")) for e in errors))
        self.errors = list(errors)

    @classmethod
    def one(cls, loc: Sequence[str | int], msg: str, value: Any = None, kind: str = "value_error"):
        return cls([{"loc": list(loc), "msg": msg, "type": kind, "input": value}])

    @classmethod
    def from_pydantic(cls, err: ValidationError, prefix: Sequence[str | int]) -> InputError:
        return cls(
            [
                {
                    "loc": [*prefix, *e["loc"]],
                    "msg": e["msg"].removeprefix("Value error, "),
                    "type": e["type"],
                    "input": e.get("input"),
                }
                for e in err.errors()
            ]
        )


def _safe(value: Any) -> Any:
    try:
        encoded = jsonable_encoder(value)
        json.dumps(encoded)
        return encoded
    except (TypeError, ValueError):
        return repr(value)


def validation_body(errors: Sequence[Any]) -> dict[str, Any]:
    detail = []
    lines = []
    for e in errors:
        loc = [p if isinstance(p, int) else str(p) for p in e.get("loc", [])]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        detail.append(
            {
                "loc": loc,
                "msg": msg,
                "type": str(e.get("type", "value_error")),
                "input": _safe(e.get("input")),
            }
        )
        where = ".".join(str(p) for p in loc) or "(request)"
        lines.append(f"{where}: {msg} (got {e.get('input')!r})")
    return {"detail": detail, "message": "\n".join(lines)}


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


_GENERIC = {
    404: "no such route: {method} {path} (see /docs)",
    405: "method {method} is not allowed on {path} (see /docs)",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(validation_body(exc.errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not even text: a 422 like any bad body.
            problem = {
                "loc": ["body"],
                "msg": "the body is not valid UTF-8 JSON",
                "type": "json_invalid",
            }
            return JSONResponse(validation_body([problem]), status_code=422)
        if exc.status_code in _GENERIC and detail in ("Not Found", "Method Not Allowed"):
            detail = _GENERIC[exc.status_code].format(method=request.method, path=request.url.path)
        return _json(exc.status_code, str(detail), getattr(exc, "headers", None))

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return _json(404, str(exc))

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return _json(409, str(exc))

    @app.exception_handler(TransitionError)
    async def _transition(_: Request, exc: TransitionError) -> JSONResponse:
        return _json(409, str(exc))

    @app.exception_handler(ActionError)
    async def _action(_: Request, exc: ActionError) -> JSONResponse:
        return _json(409, str(exc))

    @app.exception_handler(RayUnavailableError)
    async def _ray(_: Request, exc: RayUnavailableError) -> JSONResponse:
        return _json(503, f"the Ray cluster is unavailable: {exc}", {"Retry-After": "5"})

    @app.exception_handler(StorageError)
    async def _storage(_: Request, exc: StorageError) -> JSONResponse:
        log.warning("storage: %s", exc)
        return _json(503, f"campaign storage is unavailable: {exc}", {"Retry-After": "5"})
