"""A small HTTP client of the scoring endpoint, for Dagster assets, sensors, the CLI and tests."""

import re
from collections.abc import Mapping, Sequence

import httpx

# The server's own processing time of a request (mlops_core.serving.app.ObservedMiddleware).
_SERVER_TIMING = re.compile(r"(?:^|,)\s*app;dur=([0-9.]+)")


class EndpointError(RuntimeError):
    """The endpoint is unreachable or refused a call; the message says which and why."""


def server_time_ms(response: httpx.Response) -> float | None:
    """The `Server-Timing: app;dur=<ms>` the endpoint puts on every response; None if absent."""
    match = _SERVER_TIMING.search(response.headers.get("server-timing", ""))
    return float(match.group(1)) if match else None


class EndpointClient:
    """`transport` replaces the network (tests: an in-process app, or one that adds delay)."""

    def __init__(
        self,
        url: str,
        admin_token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._admin = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def _respond(self, method: str, path: str, admin: bool = False, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, headers=self._admin if admin else None, **kwargs)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"{method} {self.url}{path}: endpoint unreachable ({type(exc).__name__}: {exc}); is `mlops serve` running?"
            ) from exc
        if response.status_code >= 400:
            raise EndpointError(f"{method} {self.url}{path} -> HTTP {response.status_code}: {response.text[:500]}")
        return response

    def _call(self, method: str, path: str, admin: bool = False, **kwargs) -> dict:
        return self._respond(method, path, admin, **kwargs).json()

    def alive(self) -> bool:
        try:
            return self._http.get("/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def deployment(self) -> dict:
        return self._call("GET", "/deployment")

    def predict(self, transaction: Mapping[str, object]) -> dict:
        return self._call("POST", "/v1/predict", json=dict(transaction))

    def predict_timed(self, transaction: Mapping[str, object]) -> tuple[dict, float | None]:
        """The answer and the server's own processing time of the request in ms (Server-Timing)."""
        response = self._respond("POST", "/v1/predict", json=dict(transaction))
        return response.json(), server_time_ms(response)

    def traffic(
        self,
        reason: str,
        champion_version: str | None = None,
        canary_version: str | None = None,
        canary_share: float = 0.0,
        shadow_version: str | None = None,
        canary_excluded: Sequence[Mapping[str, object]] = (),
    ) -> dict:
        body = {
            "champion_version": champion_version,
            "canary_version": canary_version,
            "canary_share": canary_share,
            "shadow_version": shadow_version,
            "reason": reason,
            "canary_excluded": [dict(rule) for rule in canary_excluded],
        }
        return self._call("POST", "/admin/traffic", admin=True, json=body)

    def rollback(self, reason: str) -> dict:
        return self._call("POST", "/admin/rollback", admin=True, json={"reason": reason})

    def reload(self) -> dict:
        return self._call("POST", "/admin/reload", admin=True, json={})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "EndpointClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
