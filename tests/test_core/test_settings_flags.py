"""MLOPS_TRAIN_ON_EARLY_FRAUDS: parsed strictly, published to children only when on, and carried by the
settings resource the assets read."""

import pytest

from mlops_core.settings import Settings
from resources.settings import SettingsResource


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, False),
        ("", False),
        ("0", False),
        ("false", False),
        ("No", False),
        ("1", True),
        ("TRUE", True),
        ("yes", True),
    ],
)
def test_the_flag_is_read_from_the_environment(tmp_path, raw, expected):
    env = {"MLOPS_HOME": str(tmp_path / "home"), **({} if raw is None else {"MLOPS_TRAIN_ON_EARLY_FRAUDS": raw})}
    settings = Settings.from_env(env)
    assert settings.train_on_early_frauds is expected
    assert ("MLOPS_TRAIN_ON_EARLY_FRAUDS" in settings.environment()) is expected
    assert SettingsResource.of(settings).get().train_on_early_frauds is expected


@pytest.mark.parametrize("raw", ["2", "on", "tru"])
def test_a_value_that_is_neither_is_named(tmp_path, raw):
    with pytest.raises(ValueError, match=f"MLOPS_TRAIN_ON_EARLY_FRAUDS must be 1/true/yes or 0/false/no, got '{raw}'"):
        Settings.from_env({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_TRAIN_ON_EARLY_FRAUDS": raw})
