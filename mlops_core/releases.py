"""The GitOps record of what is deployed: one release file per registered model, written on every promotion
and rollback. No dagster here.

`<releases dir>/<registered model>.yaml` says which version serves, what it is (the sha256 of its ONNX graph,
the training data version, the code commit, the gates it passed, its model card) and who or what put it
there and why. It is what a reviewer reads in a pull request, what Argo CD applies (deploy/argocd/), and
what the endpoint checks: it refuses to serve a version whose ONNX bytes do not hash to the release's.

With a git remote configured (MLOPS_RELEASES_GIT_REMOTE), the releases directory is a clone of the GitOps
repository: each change is committed to MLOPS_RELEASES_GIT_BRANCH and pushed, so a promotion becomes a
reviewable commit. `mlops release diff` shows what promoting the current challenger would change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlops_core import registry
from mlops_core.training.model_card import MODEL_CARD_ARTIFACT

if TYPE_CHECKING:
    from mlflow import MlflowClient

GATES_ARTIFACT = "gates.json"
PROMOTE, ROLLBACK = "promote", "rollback"
KUSTOMIZATION = "kustomization.yaml"
CONFIGMAP = "mlops-releases"
NAMESPACE = "mlops"
HEADER = (
    "# The deployed version of this registered model, written by the platform on every promotion and rollback\n"
    "# (mlops_core/releases.py). Review it like code; the endpoint refuses an ONNX graph that does not match.\n"
)


class ReleaseMismatch(RuntimeError):
    """A release file and the registry disagree on what a version is."""


@dataclass(frozen=True)
class Release:
    registered_model: str
    version: str
    onnx_sha256: str
    data_version: str | None
    code_version: str | None
    trained_through: str | None
    run_id: str | None
    model_card: str | None
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    action: str = PROMOTE
    previous_version: str | None = None
    actor: str = "dagster"
    reason: str = ""
    changed_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return HEADER + yaml.safe_dump(self.as_dict(), sort_keys=False, allow_unicode=True, width=120)

    @classmethod
    def from_yaml(cls, text: str, source: str = "release file") -> Release:
        data = yaml.safe_load(text) or {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = set(data) - names, {"registered_model", "version", "onnx_sha256"} - set(data)
        if unknown or missing:
            raise ValueError(
                f"{source}: unknown fields {sorted(unknown)}, missing {sorted(missing)} (expected {sorted(names)})"
            )
        return cls(**{**data, "version": str(data["version"])})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def path_for(releases_dir: Path, model_name: str) -> Path:
    return Path(releases_dir) / f"{model_name}.yaml"


def read(releases_dir: Path, model_name: str) -> Release | None:
    path = path_for(releases_dir, model_name)
    return Release.from_yaml(path.read_text(), str(path)) if path.exists() else None


def release_of(
    client: MlflowClient,
    model_name: str,
    version: str,
    *,
    action: str,
    previous_version: str | None,
    actor: str,
    reason: str,
    changed_at: dt.datetime | None = None,
) -> Release:
    """What the registry says `version` is: its ONNX graph's hash, versions, gates and model card."""
    from mlops_core.serving.models import onnx_bytes

    graph = onnx_bytes(client, version, model_name)
    details = client.get_model_version(model_name, str(version))
    tags = client.get_run(details.run_id).data.tags if details.run_id else {}
    gates = (registry.run_json_artifact(client, details.run_id, GATES_ARTIFACT) or {}) if details.run_id else {}
    return Release(
        registered_model=model_name,
        version=str(version),
        onnx_sha256=sha256(graph),
        data_version=tags.get("data_version"),
        code_version=tags.get("code_version"),
        trained_through=tags.get("trained_through"),
        run_id=details.run_id,
        model_card=f"runs:/{details.run_id}/{MODEL_CARD_ARTIFACT}" if details.run_id else None,
        gates=gates,
        action=action,
        previous_version=previous_version,
        actor=actor,
        reason=reason,
        changed_at=(changed_at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
    )


def diff(current: Release | None, proposed: Release) -> list[tuple[str, Any, Any]]:
    """(field, now, after) for every field that would change; who, when and why always change and are left out."""
    bookkeeping = {"actor", "reason", "changed_at", "action", "previous_version"}
    now = {} if current is None else current.as_dict()
    return [(k, now.get(k), v) for k, v in proposed.as_dict().items() if k not in bookkeeping and now.get(k) != v]


def _git(releases_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "mlops platform"),
        "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "mlops@localhost"),
        "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "mlops platform"),
        "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "mlops@localhost"),
    }
    result = subprocess.run(["git", *args], cwd=releases_dir, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {releases_dir} failed: {result.stderr.strip() or result.stdout}")
    return result


def _sync_branch(releases_dir: Path, remote: str, branch: str) -> None:
    """Make `releases_dir` a clone of `remote` on `branch`, at the branch's newest commit (a new branch starts
    empty): a promotion never commits on top of a stale or foreign history."""
    if not (releases_dir / ".git").exists():
        _git(releases_dir, "init", "--quiet", "-b", branch)
    if _git(releases_dir, "remote", "get-url", "origin", check=False).returncode != 0:
        _git(releases_dir, "remote", "add", "origin", remote)
    else:
        _git(releases_dir, "remote", "set-url", "origin", remote)
    if _git(releases_dir, "fetch", "--quiet", "origin", branch, check=False).returncode == 0:
        _git(releases_dir, "checkout", "--quiet", "-B", branch, "FETCH_HEAD")
    else:
        _git(releases_dir, "checkout", "--quiet", "-B", branch)


def write(
    releases_dir: Path, release: Release, remote: str = "", branch: str = "mlops/releases"
) -> tuple[Path, str | None]:
    """Write the release file (atomically); with a remote, commit it on `branch` and push. Returns the file and
    the commit (None without a remote)."""
    releases_dir = Path(releases_dir)
    releases_dir.mkdir(parents=True, exist_ok=True)
    if remote:
        _sync_branch(releases_dir, remote, branch)
    path = path_for(releases_dir, release.registered_model)
    partial = path.with_suffix(".yaml.partial")
    partial.write_text(release.to_yaml())
    partial.replace(path)
    write_kustomization(releases_dir)
    if not remote:
        return path, None
    _git(releases_dir, "add", path.name, KUSTOMIZATION)
    message = (
        f"{release.registered_model}: {release.action} to version {release.version}"
        f"{'' if release.previous_version is None else f' (was {release.previous_version})'}\n\n"
        f"{release.reason}\n\nactor: {release.actor}\nonnx sha256: {release.onnx_sha256}\n"
        f"gates: {json.dumps({k: v.get('passed') for k, v in release.gates.items()}, sort_keys=True)}\n"
    )
    _git(releases_dir, "commit", "--quiet", "--allow-empty", "-m", message)
    _git(releases_dir, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
    return path, _git(releases_dir, "rev-parse", "HEAD").stdout.strip()


def write_kustomization(releases_dir: Path) -> Path:
    """kustomization.yaml beside the release files: one ConfigMap (CONFIGMAP) holding every one of them, which
    Argo CD renders (deploy/argocd/application.yaml) and the serving pods mount as MLOPS_RELEASES_DIR. The name
    keeps no hash suffix: the Deployment names it, and the endpoint re-reads the files at each model load."""
    files = sorted(p.name for p in Path(releases_dir).glob("*.yaml") if p.name != KUSTOMIZATION)
    document = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "configMapGenerator": [{"name": CONFIGMAP, "files": files}],
        "generatorOptions": {
            "disableNameSuffixHash": True,
            "labels": {"app.kubernetes.io/part-of": "mlops-platform", "app.kubernetes.io/component": "releases"},
        },
    }
    path = Path(releases_dir) / KUSTOMIZATION
    path.write_text(
        "# Written by mlops_core/releases.py with every release file.\n" + yaml.safe_dump(document, sort_keys=False)
    )
    return path


def verify(releases_dir: Path | None, model_name: str, version: str, onnx_bytes: bytes) -> None:
    """Raise ReleaseMismatch when the release file names `version` with another ONNX hash. A version the
    file does not name (a canary, a shadow) and a model without a release file are not judged here."""
    if releases_dir is None:
        return
    release = read(releases_dir, model_name)
    if release is None or release.version != str(version):
        return
    found = sha256(onnx_bytes)
    if found != release.onnx_sha256:
        raise ReleaseMismatch(
            f"{path_for(releases_dir, model_name)} says {model_name!r} version {version} has ONNX sha256 "
            f"{release.onnx_sha256}, but the registry's graph hashes to {found}: refusing to serve it"
        )
