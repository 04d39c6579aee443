"""The ASGI app: the HTTP face of ScoringService (FastAPI on uvicorn).

Scoring routes are `async def` and score inline: the work is ~0.1 ms of CPU, cheaper than a
thread hop; each then awaits its prediction log commit, so an answered request is logged.
Admin routes that load models run in the thread pool, so scoring continues while a new model
is downloaded and built. Every response carries `Server-Timing: app;dur=<ms>`, the server's
own time for the request, and is counted in /metrics by route and status.
"""

import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from mlops_core.features.spec import FEATURE_NAMES
from mlops_core.registry import MODEL_NAME
from mlops_core.serving.limits import ServingLimits
from mlops_core.serving.models import ModelLoadError
from mlops_core.serving.prediction_log import LogUnavailable
from mlops_core.serving.projects import (
    MAX_BATCH,
    ProjectModels,
    ProjectNotReady,
    UnknownEntity,
    UnknownProject,
    invalid,
)
from mlops_core.serving.schemas import (
    BatchRequest,
    BatchResponse,
    Prediction,
    RollbackRequest,
    TrafficRequest,
    Transaction,
)
from mlops_core.serving.service import InvalidTransactions, NotReady, ScoringService, TrafficError

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = ServingLimits.max_body_bytes
# The label of a path no route serves (404s): a fixed value, so scanners cannot grow /metrics.
OTHER_ROUTE = "other"


class ObservedMiddleware:
    """Outermost: times each request and counts each answer; an unhandled error becomes a counted 500.

    The time runs from the request reaching the app to the start of its response (body read,
    validation, scoring and the log commit included; the network and the client are not), and
    is returned as `Server-Timing: app;dur=<ms>`: the staging smoke test judges the model's
    latency by it, not by a client's wall clock on a busy machine.
    """

    def __init__(self, app, count: Callable[[str | None, int], None]) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = None

        async def timed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                timing = b"app;dur=%.3f" % ((time.perf_counter() - started) * 1000.0)
                message = {**message, "headers": [*message.get("headers", ()), (b"server-timing", timing)]}
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except ClientDisconnect:
            pass  # the client left (or the server timed its request out): nothing to answer
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if status is None:
                await _send_json(
                    timed_send,
                    500,
                    {
                        "error": "internal error",
                        "detail": "the server failed on this request; its log has the traceback",
                    },
                )
        if status is not None:
            self.count(scope.get("path"), status)


class BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Refuse oversized bodies (413) and non-JSON POSTs (415) before any parsing.

    Pure ASGI rather than BaseHTTPMiddleware: it adds microseconds, not a task per request.
    """

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            found = content_type.decode("latin-1") or "none"
            return await _send_json(
                send,
                415,
                {"error": "unsupported media type", "detail": f"Content-Type must be application/json, found {found}"},
            )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await _send_json(
                send,
                413,
                {
                    "error": "request too large",
                    "detail": f"body is {int(length)} bytes, the limit is {self.max_body_bytes}",
                },
            )
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                raise BodyTooLarge(f"body exceeds {self.max_body_bytes} bytes")
            return message

        try:
            await self.app(scope, counted_receive, send)
        except BodyTooLarge as exc:
            await _send_json(send, 413, {"error": "request too large", "detail": str(exc)})


def refused_transactions(exc: InvalidTransactions, route: str) -> list[dict]:
    """The service's refusals in the shape of pydantic's errors, located in the request body."""
    prefix = lambda row: ("transactions", row) if route == "batch" else ()  # noqa: E731
    return [{"loc": (*prefix(p.row), p.field), "msg": p.problem, "input": p.found} for p in exc.problems]


def invalid_request_body(errors: list[dict]) -> dict:
    """The 422 body: the fields at fault, what is wrong with each and what was found."""
    # A malformed body reports a character offset as its location: name the body instead.
    fields = [
        "body"
        if e.get("type") == "json_invalid"
        else ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        for e in errors
    ]
    detail = [{"field": f, "problem": e.get("msg"), "found": _short(e.get("input"))} for f, e in zip(fields, errors)]
    return {"error": "invalid request", "fields": fields, "detail": detail}


class FastScoring:
    """The two scoring routes served straight from ASGI, in front of FastAPI.

    Same contract, same errors, same metrics as the FastAPI routes below (the tests run
    both), without the per-request routing, dependency and serialisation layers: the
    framework cost more than the scoring itself (see benchmarks/RESULTS.md).
    """

    ROUTES = {"/v1/predict": "predict", "/v1/predict/batch": "batch"}

    def __init__(self, app, service: ScoringService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        route = self.ROUTES.get(scope.get("path")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone (or the server timed the request out): nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            if route == "predict":
                transactions = [Transaction.model_validate_json(body).model_dump()]
            else:
                transactions = [t.model_dump() for t in BatchRequest.model_validate_json(body).transactions]
        except ValidationError as exc:
            return await _send_json(send, 422, invalid_request_body(exc.errors()))
        try:
            results = await self.service.predict_async(transactions, route=route)
        except InvalidTransactions as exc:
            return await _send_json(send, 422, invalid_request_body(refused_transactions(exc, route)))
        except NotReady as exc:
            return await _send_json(send, 503, {"error": "not ready", "detail": str(exc)})
        except LogUnavailable as exc:
            return await _send_json(send, 503, {"error": "prediction log unavailable", "detail": str(exc)})
        answer = results[0].as_dict() if route == "predict" else {"predictions": [r.as_dict() for r in results]}
        await _send_json(send, 200, answer)


async def _send_json(send, status: int, body: dict) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_app(
    service: ScoringService,
    admin_token: str | None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    fast_scoring: bool = True,
    identity: Mapping[str, object] | None = None,
    projects: ProjectModels | None = None,
) -> FastAPI:
    """The app. With `fast_scoring` the scoring routes bypass FastAPI (FastScoring); the FastAPI
    routes stay as the documented API (/docs) and as the reference the tests compare against.
    `identity` (role, MLOPS_HOME, port) is reported by /health beside the pid, so a starter can
    tell its own server from another one on the port."""
    app = FastAPI(title="mlops fraud scoring", version="1", docs_url="/docs", redoc_url=None)
    app.state.service = service
    paths: set[str] = set(FastScoring.ROUTES)  # completed below, once the routes exist

    def count_response(path: str | None, status: int) -> None:
        service.metrics.count_http(path if path in paths else _project_route(path), status)

    # The server's protocol counts its own refusals (431, 408, 400, 503) through this too.
    app.state.count_response = count_response
    # Added last = outermost: size and content-type are refused before any route, fast or not,
    # and every answer, refusals included, is timed and counted.
    if fast_scoring:
        app.add_middleware(FastScoring, service=service)
    app.add_middleware(GuardMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(ObservedMiddleware, count=count_response)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content=invalid_request_body(exc.errors()))

    @app.exception_handler(InvalidTransactions)
    async def refused(request: Request, exc: InvalidTransactions):
        return JSONResponse(status_code=422, content=invalid_request_body(refused_transactions(exc, _route(request))))

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady):
        return JSONResponse(status_code=503, content={"error": "not ready", "detail": str(exc)})

    @app.exception_handler(LogUnavailable)
    async def log_unavailable(request: Request, exc: LogUnavailable):
        return JSONResponse(status_code=503, content={"error": "prediction log unavailable", "detail": str(exc)})

    @app.exception_handler(TrafficError)
    async def traffic_error(request: Request, exc: TrafficError):
        return JSONResponse(status_code=409, content={"error": "traffic change refused", "detail": str(exc)})

    def require_admin(request: Request) -> None:
        if not admin_token:
            raise _HTTPError(503, "admin routes are disabled: MLOPS_ADMIN_TOKEN is not set on the server")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _HTTPError(401, "admin route: send Authorization: Bearer <MLOPS_ADMIN_TOKEN>")
        if not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise _HTTPError(403, "admin route: the bearer token is wrong")

    @app.exception_handler(_HTTPError)
    async def http_error(request: Request, exc: _HTTPError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(status_code=exc.status, content={"error": exc.detail}, headers=headers)

    @app.post("/v1/predict", response_model=Prediction)
    async def predict(transaction: Transaction):
        (result,) = await service.predict_async([transaction.model_dump()], route="predict")
        return result.as_dict()

    @app.post("/v1/predict/batch", response_model=BatchResponse)
    async def predict_batch(batch: BatchRequest):
        results = await service.predict_async([t.model_dump() for t in batch.transactions], route="batch")
        return {"predictions": [r.as_dict() for r in results]}

    @app.get("/health")
    async def health():
        return {"status": "alive", "pid": os.getpid(), **(identity or {})}

    @app.get("/ready")
    async def ready():
        status = service.status()
        if not status["ready"]:
            return JSONResponse(
                status_code=503, content={"ready": False, "detail": "no champion model loaded", **status}
            )
        try:
            store = service.features.store.status()
        except Exception as exc:  # the store is a network service in production
            return JSONResponse(
                status_code=503, content={"ready": False, "detail": f"online store unavailable: {exc}", **status}
            )
        watermark = store.watermark
        return {
            **status,
            "online_store": {
                "events": store.events,
                "accounts": store.accounts,
                "watermark": watermark and watermark.isoformat(),
            },
        }

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/deployment")
    async def deployment():
        return service.deployment.describe()

    @app.post("/admin/traffic", dependencies=[Depends(require_admin)])
    def traffic(change: TrafficRequest):
        unknown = sorted({rule.feature for rule in change.canary_excluded} - set(FEATURE_NAMES))
        if unknown:
            raise TrafficError(f"canary_excluded names features the endpoint does not compute: {unknown}")
        return service.apply(
            change.champion_version,
            change.canary_version,
            change.canary_share,
            change.shadow_version,
            change.reason,
            [rule.model_dump() for rule in change.canary_excluded],
        ).describe()

    @app.post("/admin/rollback", dependencies=[Depends(require_admin)])
    def rollback(change: RollbackRequest):
        return service.rollback(change.reason).describe()

    @app.post("/admin/reload", dependencies=[Depends(require_admin)])
    def reload():
        return service.reload().describe()

    served = projects if projects is not None else ProjectModels([], None, lambda p: None, ".", None, 0)

    @app.get("/v1/models")
    async def models():
        """Every project this endpoint serves, with its versions: fraud (the reference) and each declared one."""
        fraud = {
            "project": FRAUD_PROJECT,
            "registered_model": MODEL_NAME,
            "serving_mode": "both",
            "loaded": service.status()["ready"],
            **{
                k: v
                for k, v in service.deployment.describe().items()
                if k in ("champion_version", "canary_version", "canary_share", "shadow_version")
            },
        }
        return {"models": [fraud, *served.describe()]}

    async def _project_requests(project: str, request: Request, batch: bool) -> tuple[list[dict], bool]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise _HTTPError(422, f"the body is not JSON: {exc}") from None
        if project == FRAUD_PROJECT:
            if batch:
                return [t.model_dump() for t in BatchRequest.model_validate(body).transactions], True
            return [Transaction.model_validate(body).model_dump()], True
        served.project(project)  # 404 before validating against a schema that does not exist
        if batch:
            if not isinstance(body, dict) or set(body) != {"requests"} or not isinstance(body["requests"], list):
                raise _HTTPError(422, 'a batch is {"requests": [ ... ]}: one object per entity')
            items = body["requests"]
            if not 1 <= len(items) <= MAX_BATCH:
                raise _HTTPError(422, f"a batch holds 1 to {MAX_BATCH} requests, found {len(items)}")
            checked = []
            for row, item in enumerate(items):
                try:
                    checked.append(served.validate(project, item))
                except ValidationError as exc:
                    raise _ProjectInvalid(invalid(exc, ("requests", row))) from None
            return checked, False
        try:
            return [served.validate(project, body)], False
        except ValidationError as exc:
            raise _ProjectInvalid(invalid(exc)) from None

    @app.exception_handler(_ProjectInvalid)
    async def project_invalid(request: Request, exc: _ProjectInvalid):
        return JSONResponse(status_code=422, content=invalid_request_body(exc.errors))

    @app.exception_handler(ValidationError)
    async def body_invalid(request: Request, exc: ValidationError):
        return JSONResponse(status_code=422, content=invalid_request_body(exc.errors()))

    @app.exception_handler(UnknownProject)
    async def unknown_project(request: Request, exc: UnknownProject):
        return JSONResponse(status_code=404, content={"error": "unknown project", "detail": str(exc)})

    @app.exception_handler(UnknownEntity)
    async def unknown_entity(request: Request, exc: UnknownEntity):
        return JSONResponse(status_code=404, content={"error": "unknown entity", "detail": str(exc)})

    @app.exception_handler(ProjectNotReady)
    async def project_not_ready(request: Request, exc: ProjectNotReady):
        return JSONResponse(status_code=503, content={"error": "not ready", "detail": str(exc)})

    @app.post("/v1/models/{project}/predict")
    async def project_predict(project: str, request: Request):
        """One prediction of `project` (fraud: the /v1/predict contract; others: their declared request schema)."""
        rows, is_fraud = await _project_requests(project, request, batch=False)
        if is_fraud:
            (result,) = await service.predict_async(rows, route="predict")
            return result.as_dict()
        return (await _project_predict(project, rows, "predict"))[0]

    @app.post("/v1/models/{project}/predict/batch")
    async def project_predict_batch(project: str, request: Request):
        rows, is_fraud = await _project_requests(project, request, batch=True)
        if is_fraud:
            return {"predictions": [r.as_dict() for r in await service.predict_async(rows, route="batch")]}
        return {"predictions": await _project_predict(project, rows, "batch")}

    async def _project_predict(project: str, rows: list[dict], route: str) -> list[dict]:
        """Scored inline when the project is loaded (~0.1 ms); its first request loads models and features in
        the thread pool, so the event loop keeps answering every other project meanwhile."""
        if served.is_loaded(project):
            return served.predict(project, rows, route=route)
        return await run_in_threadpool(served.predict, project, rows, route)

    @app.post("/admin/models/{project}/traffic", dependencies=[Depends(require_admin)])
    def project_traffic(project: str, change: TrafficRequest):
        if project == FRAUD_PROJECT:
            return traffic(change)
        try:
            return served.apply(
                project,
                change.champion_version,
                change.canary_version,
                change.canary_share,
                change.shadow_version,
                change.reason,
            )
        except (ModelLoadError, ValueError) as exc:
            raise TrafficError(str(exc)) from exc

    @app.post("/admin/models/{project}/rollback", dependencies=[Depends(require_admin)])
    def project_rollback(project: str, change: RollbackRequest):
        if project == FRAUD_PROJECT:
            return rollback(change)
        return served.rollback(project, change.reason)

    paths.update(route.path for route in app.routes if hasattr(route, "path"))
    return app


FRAUD_PROJECT = "fraud"
_PROJECT_ROUTES = {"predict": "/v1/models/{project}/predict", "batch": "/v1/models/{project}/predict/batch"}


def _project_route(path: str | None) -> str:
    """The route label of a project path (its template), else OTHER_ROUTE: /metrics never grows with what
    clients send; the per-project series (mlops_project_*) carry the project."""
    if path and path.startswith("/v1/models/"):
        parts = path.split("/")
        if len(parts) == 5 and parts[4] == "predict":
            return _PROJECT_ROUTES["predict"]
        if len(parts) == 6 and parts[4:] == ["predict", "batch"]:
            return _PROJECT_ROUTES["batch"]
    return OTHER_ROUTE


class _ProjectInvalid(Exception):
    def __init__(self, errors: list[dict]) -> None:
        self.errors = errors


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


def _route(request: Request) -> str:
    return (
        "batch"
        if request.url.path.endswith("/batch")
        else "predict"
        if request.url.path.startswith("/v1/")
        else request.url.path
    )


def _short(value: object) -> object:
    text = repr(value)
    return value if len(text) <= 80 and isinstance(value, (str, int, float, bool, type(None))) else text[:80]
