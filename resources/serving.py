"""The production scoring endpoint as Dagster sees it: where it answers and where it logs."""

import dagster as dg
from pydantic import Field

from mlops_core.serving.client import EndpointClient


class ServingEndpointResource(dg.ConfigurableResource):
    """The live endpoint (`mlops serve`): its URL for traffic changes and its prediction log for analysis."""

    url: str = Field(default="http://127.0.0.1:8000", description="Base URL of the production endpoint.")
    admin_token: str = Field(description="Bearer token of the admin routes; pass dg.EnvVar('MLOPS_ADMIN_TOKEN').")
    prediction_log_path: str = Field(description="The endpoint's prediction log (sqlite) on shared storage.")
    plan_path: str = Field(description="The endpoint's recorded traffic plan, written here when the endpoint is down.")
    timeout_seconds: float = Field(default=120.0, description="Admin calls load models: allow for a download.")

    def client(self) -> EndpointClient:
        return EndpointClient(self.url, self.admin_token, timeout=self.timeout_seconds)
