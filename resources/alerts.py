"""Alerts: a log line always, and a Slack-compatible webhook when one is configured."""

import datetime as dt
import logging

import dagster as dg
from pydantic import Field

log = logging.getLogger("mlops.alerts")


def slack_payload(title: str, text: str, fields: dict[str, object]) -> dict:
    """Slack incoming-webhook JSON: a fallback `text` plus blocks with the fields."""
    lines = "\n".join(f"*{k}*: {v}" for k, v in fields.items())
    return {
        "text": f"{title}: {text}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
            *([{"type": "section", "text": {"type": "mrkdwn", "text": lines[:3000]}}] if lines else []),
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}],
            },
        ],
    }


class AlertResource(dg.ConfigurableResource):
    """Where alerts go. Without a webhook URL, alerts are log entries only."""

    webhook_url: str = Field(
        default="", description="Slack-compatible incoming webhook; pass dg.EnvVar('MLOPS_ALERT_WEBHOOK_URL')."
    )
    timeout_seconds: float = Field(
        default=5.0, description="Seconds to wait for the webhook; a slower post is logged as failed, never raised."
    )

    def send(self, title: str, text: str, fields: dict[str, object] | None = None) -> bool:
        """Log the alert and post it; True if the webhook accepted it. A failed post is logged, never raised:
        an alert outage must not undo the rollback it reports."""
        import httpx

        fields = fields or {}
        log.warning("ALERT %s: %s %s", title, text, fields)
        if not self.webhook_url:
            return False
        try:
            response = httpx.post(
                self.webhook_url, json=slack_payload(title, text, fields), timeout=self.timeout_seconds
            )
        except httpx.HTTPError as exc:
            log.error("alert webhook %s unreachable: %s", self.webhook_url, exc)
            return False
        if response.status_code >= 300:
            log.error(
                "alert webhook %s answered HTTP %d: %s", self.webhook_url, response.status_code, response.text[:200]
            )
            return False
        return True
