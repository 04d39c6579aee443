"""The GitOps path offline: the Argo CD Application against its schema, the release branch it follows, and the
ConfigMap the release files become, mounted where the serving pods look for them."""

from __future__ import annotations

import copy
import json

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlops_core import releases
from mlops_core.settings import REPO_ROOT

APPLICATION = REPO_ROOT / "deploy" / "argocd" / "application.yaml"
SCHEMA = json.loads((REPO_ROOT / "tests" / "schemas" / "argocd-application.schema.json").read_text())
KUBE_VERSION = "1.31.0"


def _application() -> dict:
    return yaml.safe_load(APPLICATION.read_text())


def _errors(document: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_application_is_valid_and_the_schema_refuses_near_misses():
    assert _errors(_application()) == []
    typo = _application()
    typo["spec"]["syncPolicy"]["automated"]["selfheal"] = True  # one letter's case: silently ignored by Argo CD
    assert any("selfheal" in e for e in _errors(typo))
    no_destination = _application()
    del no_destination["spec"]["destination"]
    assert any("'destination' is a required property" in e for e in _errors(no_destination))
    both = _application()
    both["spec"]["source"] = copy.deepcopy(both["spec"]["sources"][0])
    assert _errors(both), "source and sources together must be refused"
    bad_backoff = _application()
    bad_backoff["spec"]["syncPolicy"]["retry"]["backoff"]["duration"] = "10 seconds"
    assert any("duration" in e for e in _errors(bad_backoff))


def _manifests(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO_ROOT / "deploy" / "k8s" / name).read_text()) if d]


def test_the_application_follows_the_release_branch_the_platform_pushes_to():
    app = _application()
    settings = _manifests("settings.yaml")[0]["data"]
    platform, release_branch = app["spec"]["sources"]
    assert (REPO_ROOT / platform["path"]).is_dir()
    assert release_branch["targetRevision"] == settings["MLOPS_RELEASES_GIT_BRANCH"] == "mlops/releases"
    assert app["spec"]["destination"]["namespace"] == releases.NAMESPACE


def test_serving_mounts_the_release_configmap_where_its_releases_dir_points():
    serving = next(d for d in _manifests("serving.yaml") if d["kind"] == "Deployment")
    pod = serving["spec"]["template"]["spec"]
    container = pod["containers"][0]
    releases_dir = next(e["value"] for e in container["env"] if e["name"] == "MLOPS_RELEASES_DIR")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == releases_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] is True
    assert volume["configMap"] == {"name": releases.CONFIGMAP, "optional": True}


def _configmap_from_kustomization(directory) -> dict:
    """What `kustomize build` makes of the kustomization releases.write_kustomization writes: one ConfigMap."""
    kustomization = yaml.safe_load((directory / releases.KUSTOMIZATION).read_text())
    (generator,) = kustomization["configMapGenerator"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": generator["name"],
            "namespace": kustomization["namespace"],
            "labels": kustomization["generatorOptions"]["labels"],
        },
        "data": {name: (directory / name).read_text() for name in generator["files"]},
    }


@pytest.mark.parametrize("models", [["fraud_detector"], ["churn_model", "fraud_detector"]])
def test_release_files_become_one_valid_configmap_holding_each_of_them(tmp_path, models):
    for n, model in enumerate(models):
        release = releases.Release(
            registered_model=model,
            version=str(n + 1),
            onnx_sha256="ab" * 32,
            data_version="d1",
            code_version="c1",
            trained_through=None,
            run_id="r1",
            model_card="runs:/r1/model_card.md",
            gates={"gate_minimum_quality": {"passed": True, "detail": "AUC-PR 0.61 (min 0.2)"}},
        )
        releases.write(tmp_path, release)
    configmap = _configmap_from_kustomization(tmp_path)
    kubernetes_validate.validate(configmap, KUBE_VERSION, strict=True)
    assert configmap["metadata"]["name"] == releases.CONFIGMAP
    assert sorted(configmap["data"]) == sorted(f"{m}.yaml" for m in models)  # the kustomization itself is not in it
    # Each file in the ConfigMap reads back as the release written.
    for model in models:
        assert releases.Release.from_yaml(configmap["data"][f"{model}.yaml"]).registered_model == model
