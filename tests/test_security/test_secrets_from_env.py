"""Secrets come only from environment variables.

Every secret-like field of every resource of the built Definitions is a dagster EnvVar (the UI
shows the variable's name, never its value), checked with sentinel secrets in the environment
and the production backends selected; and no configuration or deploy file holds a secret
literal.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from mlops_core.settings import REPO_ROOT

SECRET_FIELD = re.compile(r"token|password|passwd|secret|api_?key|webhook|redis_url|credential", re.I)
SENTINELS = {
    "MLOPS_ADMIN_TOKEN": "SENTINEL-admin-token",
    "MLOPS_REDIS_URL": "redis://:SENTINEL-redis-password@127.0.0.1:6379/0",
    "MLOPS_ALERT_WEBHOOK_URL": "https://hooks.example.invalid/services/SENTINEL-webhook",
}

PROBE = """
import json, os
import dagster as dg
from mlops_assets.definitions import defs
out = {}
for key, resource in defs.resources.items():
    assert isinstance(resource, dg.ConfigurableResource), key  # typed, so every field is listed here
    values = {name: getattr(resource, name) for name in type(resource).model_fields}
    out[key] = {n: ["EnvVar", v.env_var_name] if isinstance(v, dg.EnvVar) else [type(v).__name__, str(v)] for n, v in values.items()}
print("PROBE" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def resource_fields(tmp_path_factory):
    """Field -> (type, value) of every resource of the code location, loaded in a fresh process
    with the sentinels set and the Redis online store selected."""
    home = tmp_path_factory.mktemp("secrets")
    env = {**os.environ, **SENTINELS, "MLOPS_ONLINE_STORE": "redis", "MLOPS_HOME": str(home)}
    for key in ("MLOPS_DATA_DIR", "MLOPS_DUCKDB_PATH", "DAGSTER_HOME", "MLOPS_REPORTS_DIR", "MLOPS_MLFLOW_DIR"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.split("PROBE", 1)[1])


def test_secret_like_resource_fields_are_env_vars(resource_fields):
    secret_fields = {(r, f) for r, fields in resource_fields.items() for f in fields if SECRET_FIELD.search(f)}
    assert {("serving_endpoint", "admin_token"), ("online_store", "redis_url")} <= secret_fields
    # A `*_file` field names where a laptop keeps a secret (MLOPS_HOME/admin_token), not the secret itself.
    not_env = {
        f"{r}.{f}"
        for r, f in secret_fields
        if resource_fields[r][f][0] != "EnvVar" and f != "webhook_url" and not f.endswith("_file")
    }
    assert not_env == set()


def test_the_alert_webhook_is_an_env_var(resource_fields):
    assert resource_fields["alerts"]["webhook_url"][0] == "EnvVar"


def test_the_mlflow_tracking_uri_carries_no_credentials(resource_fields):
    """MLflow reads MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN from the environment itself; the URI,
    which the resource config shows, must hold none."""
    uri = resource_fields["model_registry"]["tracking_uri"][1]
    assert uri and not CREDENTIALS_IN_URL.search(uri)


def test_no_sentinel_secret_appears_in_any_resource_config(resource_fields):
    leaked = [
        f"{r}.{f}"
        for r, fields in resource_fields.items()
        for f, (_, value) in fields.items()
        for secret in SENTINELS.values()
        if secret in value and f != "webhook_url"
    ]
    assert leaked == []


# ---- files ---------------------------------------------------------------------------------

ENV_REFERENCE = re.compile(r"^\$\{?\(?[A-Z_][A-Z0-9_]*\)?\}?$|^<[^>]+>$|^\.\.\.$")
# Keys whose value names a Kubernetes Secret (where the secret lives), not a secret.
SECRET_REFERENCES = {"secretKeyRef", "secretName", "existingSecret", "postgres_password_secret", "postgresqlSecretName"}
CREDENTIALS_IN_URL = re.compile(r"[a-z+]+://[^/\s:@]*:([^@\s/]+)@")


def config_files() -> list:
    files = [REPO_ROOT / "dagster.yaml", REPO_ROOT / "workspace.yaml"]
    files += sorted((REPO_ROOT / "deploy").rglob("*.yaml")) + sorted((REPO_ROOT / "deploy").rglob("*.yml"))
    return [f for f in files if f.exists()]


def _walk(node, path=()):
    if isinstance(node, dict):
        # Kubernetes env entries: {name: SECRET_THING, value: literal} must use valueFrom instead.
        if set(node) >= {"name", "value"} and isinstance(node["name"], str) and SECRET_FIELD.search(node["name"]):
            yield (*path, node["name"]), node["value"]
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, str(i)))
    else:
        yield path, node


def secret_literals(text: str) -> list[str]:
    found = []
    for document in yaml.safe_load_all(text):
        for path, value in _walk(document):
            if not isinstance(value, str) or not value:
                continue
            if (
                path
                and SECRET_FIELD.search(path[-1])
                and path[-1] not in SECRET_REFERENCES
                and not ENV_REFERENCE.match(value)
            ):
                # {"env": VAR} shows up as a path ending in "env"; any other key named like a secret holding text is a literal.
                if path[-1] != "env":
                    found.append(f"{'.'.join(path)} = {value[:40]!r}")
            match = CREDENTIALS_IN_URL.search(value)
            if match and not ENV_REFERENCE.match(match.group(1)):
                found.append(f"{'.'.join(path)}: URL with a password literal")
    return found


def test_config_files_hold_no_secret_literals():
    files = config_files()
    assert REPO_ROOT / "dagster.yaml" in files and len(files) >= 3
    problems = {str(f.relative_to(REPO_ROOT)): secret_literals(f.read_text()) for f in files}
    assert {f: p for f, p in problems.items() if p} == {}


def test_the_file_scan_catches_literals():
    bad = """
storage:
  postgres:
    postgres_db:
      password: hunter2
      hostname: {env: PGHOST}
env:
  - name: MLOPS_ADMIN_TOKEN
    value: abc123
url: postgresql://mlops:s3cret@db:5432/mlops
"""
    good = """
storage:
  postgres:
    postgres_db:
      password: {env: DAGSTER_PG_PASSWORD}
env:
  - name: MLOPS_ADMIN_TOKEN
    valueFrom: {secretKeyRef: {name: mlops-secrets, key: MLOPS_ADMIN_TOKEN}}
url: postgresql://mlops:${PGPASSWORD}@db:5432/mlops
"""
    assert len(secret_literals(bad)) == 3
    assert secret_literals(good) == []
