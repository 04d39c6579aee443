"""The production scoring endpoint as Dagster sees it: where it answers and where it logs."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from mlops_core.serving.client import EndpointClient
from mlops_core.serving.server import read_or_create_admin_token


class ServingEndpointResource(dg.ConfigurableResource):
    """The live endpoint (`mlops serve`): its URL for traffic changes and its prediction log for analysis."""

    url: str = Field(default="http://127.0.0.1:8000", description="Base URL of the production endpoint.")
    admin_token: str = Field(
        default="",
        description="Bearer token of the admin routes; pass dg.EnvVar('MLOPS_ADMIN_TOKEN'). Empty: admin_token_file.",
    )
    admin_token_file: str = Field(
        default="",
        description="Where a laptop without MLOPS_ADMIN_TOKEN keeps the token (MLOPS_HOME/admin_token, shared with "
        "`mlops serve`); written by `mlops prepare`, or by this resource's setup when missing. A path, not a secret.",
    )
    prediction_log_path: str = Field(description="The endpoint's prediction log (sqlite) on shared storage.")
    plan_path: str = Field(description="The endpoint's recorded traffic plan, written here when the endpoint is down.")
    timeout_seconds: float = Field(default=120.0, description="Admin calls load models: allow for a download.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if not self.admin_token and self.admin_token_file:
            read_or_create_admin_token(Path(self.admin_token_file))

    def token(self) -> str | None:
        """The admin token: the variable's value, else the file's (None when neither is there)."""
        if self.admin_token:
            return self.admin_token
        path = Path(self.admin_token_file) if self.admin_token_file else None
        return path.read_text().strip() if path is not None and path.exists() else None

    def client(self) -> EndpointClient:
        return EndpointClient(self.url, self.token(), timeout=self.timeout_seconds)
