"""The ASGI app: the HTTP face of ScoringService (FastAPI on uvicorn).

Scoring routes are `async def` and score inline: the work is ~0.1 ms of CPU, cheaper than a
thread hop. Admin routes that load models run in the thread pool, so scoring continues
while a new model is downloaded and built.
"""

import hmac
import logging

import orjson

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from mlops_core.serving.schemas import BatchRequest, BatchResponse, Prediction, RollbackRequest, TrafficRequest, Transaction
from mlops_core.serving.service import NotReady, ScoringService, TrafficError

log = logging.getLogger(__name__)

# A batch of MAX_BATCH transactions is ~300 KB of JSON; anything far beyond is abuse or a bug.
DEFAULT_MAX_BODY_BYTES = 1_000_000


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
            return await _send_json(send, 415, {"error": "unsupported media type", "detail": f"Content-Type must be application/json, found {found}"})
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await _send_json(send, 413, {"error": "request too large", "detail": f"body is {int(length)} bytes, the limit is {self.max_body_bytes}"})
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


def invalid_request_body(errors: list[dict]) -> dict:
    """The 422 body: the fields at fault, what is wrong with each and what was found."""
    # A malformed body reports a character offset as its location: name the body instead.
    fields = [
        "body" if e.get("type") == "json_invalid" else ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
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
            self.service.metrics.requests.labels(route, "none", "422").inc()
            return await _send_json(send, 422, invalid_request_body(exc.errors()))
        try:
            results = self.service.predict(transactions, route=route)
        except NotReady as exc:
            return await _send_json(send, 503, {"error": "not ready", "detail": str(exc)})
        answer = results[0].as_dict() if route == "predict" else {"predictions": [r.as_dict() for r in results]}
        await _send_json(send, 200, answer)


async def _send_json(send, status: int, body: dict) -> None:
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def create_app(
    service: ScoringService, admin_token: str | None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, fast_scoring: bool = True
) -> FastAPI:
    """The app. With `fast_scoring` the scoring routes bypass FastAPI (FastScoring); the FastAPI
    routes stay as the documented API (/docs) and as the reference the tests compare against."""
    app = FastAPI(title="mlops fraud scoring", version="1", docs_url="/docs", redoc_url=None)
    app.state.service = service
    # Added last = outermost: size and content-type are refused before any route, fast or not.
    if fast_scoring:
        app.add_middleware(FastScoring, service=service)
    app.add_middleware(GuardMiddleware, max_body_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        service.metrics.requests.labels(_route(request), "none", "422").inc()
        return JSONResponse(status_code=422, content=invalid_request_body(exc.errors()))

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady):
        return JSONResponse(status_code=503, content={"error": "not ready", "detail": str(exc)})

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
        (result,) = service.predict([transaction.model_dump()], route="predict")
        return result.as_dict()

    @app.post("/v1/predict/batch", response_model=BatchResponse)
    async def predict_batch(batch: BatchRequest):
        results = service.predict([t.model_dump() for t in batch.transactions], route="batch")
        return {"predictions": [r.as_dict() for r in results]}

    @app.get("/health")
    async def health():
        return {"status": "alive"}

    @app.get("/ready")
    async def ready():
        status = service.status()
        if not status["ready"]:
            return JSONResponse(status_code=503, content={"ready": False, "detail": "no champion model loaded", **status})
        try:
            store = service.features.store.status()
        except Exception as exc:  # the store is a network service in production
            return JSONResponse(status_code=503, content={"ready": False, "detail": f"online store unavailable: {exc}", **status})
        return {**status, "online_store": {"events": store.events, "accounts": store.accounts}}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/deployment")
    async def deployment():
        return service.deployment.describe()

    @app.post("/admin/traffic", dependencies=[Depends(require_admin)])
    def traffic(change: TrafficRequest):
        return service.apply(change.champion_version, change.canary_version, change.canary_share, change.shadow_version, change.reason).describe()

    @app.post("/admin/rollback", dependencies=[Depends(require_admin)])
    def rollback(change: RollbackRequest):
        return service.rollback(change.reason).describe()

    @app.post("/admin/reload", dependencies=[Depends(require_admin)])
    def reload():
        return service.reload().describe()

    return app


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


def _route(request: Request) -> str:
    return "batch" if request.url.path.endswith("/batch") else "predict" if request.url.path.startswith("/v1/") else request.url.path


def _short(value: object) -> object:
    text = repr(value)
    return value if len(text) <= 80 and isinstance(value, (str, int, float, bool, type(None))) else text[:80]
