"""Detection within the hour: the champion's served traffic judged each completed hour from the prediction log.

Pure rules first (score shift, flag rate, error rate, what an hour is), then champion_watch_sensor over a real
prediction log (sqlite, written by the endpoint's PredictionLog writer): ordinary days whose nights differ
from their afternoons raise nothing, a shifted hour is flagged and alerted within the tick, three flagged
hours in a row ask for one retraining, and an hour read half-written is judged once, whole."""

import datetime as dt
import uuid

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlops_core.monitoring.hourly import (
    HourlyRules,
    ScoreReference,
    complete_hours,
    hour_of,
    judge_hour,
    score_shift,
)
from mlops_core.serving.prediction_log import PredictionLog, PredictionRecord
from resources.alerts import AlertResource
from resources.retraining import RetrainingPolicy
from resources.serving import ServingEndpointResource
from sensors.champion_watch import CHAMPION_HOURLY_WATCH, champion_watch_sensor
from sensors.retraining import TRIGGER_TAG

START = dt.datetime(2026, 3, 1)


def _scores(rng, n: int, hour: int, shift: float = 0.0) -> np.ndarray:
    """Scores whose level depends on the hour of the day (nights riskier), as the simulation's traffic does."""
    night = 1.0 if hour >= 22 or hour < 5 else 0.0
    return 1 / (1 + np.exp(-(rng.normal(-4.0 + 1.2 * night + shift, 1.0, n))))


def _hour_frame(rng, n, hour, shift=0.0, errors=0, threshold=0.3):
    scores = _scores(rng, n, hour, shift)
    status = np.array(["ok"] * n, dtype=object)
    status[:errors] = "error"
    return pd.DataFrame({"status": status, "score": scores, "decision": (scores >= threshold).astype(int)})


def test_the_same_distribution_is_not_flagged_and_a_real_shift_is():
    rng = np.random.default_rng(0)
    reference = ScoreReference.of(
        "1", *(lambda f: (f["score"].to_numpy(), f["decision"].to_numpy()))(_hour_frame(rng, 3000, 14))
    )
    false_alarms = sum(judge_hour("h", _hour_frame(rng, 120, 14), reference, HourlyRules()).flagged for _ in range(300))
    # At 99.9% confidence per test, two tests per hour: a few in a thousand at most.
    assert false_alarms <= 3, false_alarms
    shifted = judge_hour("h", _hour_frame(rng, 120, 14, shift=1.5), reference, HourlyRules())
    assert shifted.flagged and any("score shift" in v for v in shifted.violations), shifted
    assert shifted.score_psi >= 0.1 and shifted.score_p_value < 0.001


def test_a_flag_rate_collapse_and_an_error_burst_are_flagged_and_a_thin_hour_is_not_judged():
    rng = np.random.default_rng(1)
    base = _hour_frame(rng, 3000, 14, shift=2.0)
    reference = ScoreReference.of("1", base["score"].to_numpy(), base["decision"].to_numpy())
    quiet = _hour_frame(rng, 400, 14, shift=2.0)
    quiet["decision"] = 0  # the model stops flagging: the new pattern scores low
    verdict = judge_hour("h", quiet, reference, HourlyRules())
    assert any(v.startswith("flag rate 0.00%") for v in verdict.violations), verdict
    burst = judge_hour("h", _hour_frame(rng, 200, 14, shift=2.0, errors=5), reference, HourlyRules())
    assert burst.error_rate == pytest.approx(0.025) and any("error rate 2.5%" in v for v in burst.violations)
    at_bound = judge_hour("h", _hour_frame(rng, 200, 14, shift=2.0, errors=4), reference, HourlyRules())
    assert not any("error rate" in v for v in at_bound.violations)
    thin = judge_hour("h", _hour_frame(rng, 49, 14, shift=5.0), reference, HourlyRules())
    assert not thin.judged and not thin.flagged


def test_an_hour_is_complete_only_once_a_later_event_is_logged():
    rows = pd.DataFrame({"event_timestamp": ["2026-03-01T10:59:59.999", "2026-03-01T11:00:00", "2026-03-01T12:30:00"]})
    rows["hour"] = hour_of(rows["event_timestamp"])
    assert rows["hour"].tolist() == ["2026-03-01T10:00:00", "2026-03-01T11:00:00", "2026-03-01T12:00:00"]
    hours = [h for h, _ in complete_hours(rows, "2026-03-01T12:30:00", None)]
    assert hours == ["2026-03-01T10:00:00", "2026-03-01T11:00:00"]
    assert [h for h, _ in complete_hours(rows, "2026-03-01T12:30:00", "2026-03-01T10:00:00")] == ["2026-03-01T11:00:00"]
    psi, p = score_shift(np.array([10, 0, 0]), np.array([10, 0, 0]))
    assert psi == 0 and p == 1.0


class RecordedAlerts(AlertResource):
    def send(self, title: str, text: str, fields: dict | None = None) -> bool:
        SENT.append((title, text))
        return False


SENT: list[tuple[str, str]] = []


def _records(rng, day: int, hours: range, per_hour: int, shift_from: dt.datetime | None = None, version="1"):
    records = []
    for hour in hours:
        at = START + dt.timedelta(days=day, hours=hour)
        shift = 2.0 if shift_from is not None and at >= shift_from else 0.0
        for i, score in enumerate(_scores(rng, per_hour, hour, shift)):
            stamp = at + dt.timedelta(seconds=int(i * 3600 / per_hour))
            records.append(
                PredictionRecord(
                    logged_at=stamp.timestamp(),
                    request_id=uuid.uuid4().hex,
                    transaction_id=uuid.uuid4().hex,
                    account_id="a",
                    event_timestamp=stamp.isoformat(),
                    model_version=version,
                    variant="champion",
                    served=1,
                    status="ok",
                    score=float(score),
                    decision=int(score >= 0.3),
                    latency_ms=1.0,
                    features="{}",
                )
            )
    return records


def _write(log: PredictionLog, records) -> None:
    log.append(records)
    log.flush()


@pytest.fixture
def watch(tmp_path):
    SENT.clear()
    path = tmp_path / "predictions.sqlite"
    log = PredictionLog(path)
    instance = dg.DagsterInstance.ephemeral()
    resources = {
        "serving_endpoint": ServingEndpointResource(
            prediction_log_path=str(path), plan_path=str(tmp_path / "traffic_plan.json")
        ),
        "retraining_policy": RetrainingPolicy(hourly_retrain_after=3),
        "alerts": RecordedAlerts(),
    }
    state = {"cursor": None}

    def tick():
        context = dg.build_sensor_context(instance=instance, cursor=state["cursor"], resources=resources)
        result = champion_watch_sensor(context)
        state["cursor"] = context.cursor
        return result

    yield log, tick
    log.close()


def _observed(result) -> list[dict]:
    return [
        {k: v.value for k, v in e.metadata.items()} for e in result.asset_events if e.asset_key == CHAMPION_HOURLY_WATCH
    ]


def test_ordinary_days_raise_nothing_and_a_shift_is_flagged_within_the_hour_then_retrains_once(watch):
    log, tick = watch
    rng = np.random.default_rng(7)
    per_hour = 160  # the reference of an hour of the day fills on the first day
    judged = []
    for day in range(4):
        _write(log, _records(rng, day, range(24), per_hour))
        result = tick()
        judged += _observed(result)
        assert not result.run_requests
    # Day 0 fills the references (its 23:00 once day 1 is logged); days 1-3 are judged, but for day 3's
    # 23:00, still open.
    assert len(judged) == 3 * 24 - 1, len(judged)
    assert not [j for j in judged if j["flagged"]], [j for j in judged if j["flagged"]]
    assert not SENT
    # The world changes at 10:00 on day 4; the log then holds events up to 13:xx.
    shift = START + dt.timedelta(days=4, hours=10)
    _write(log, _records(rng, 4, range(14), per_hour, shift_from=shift))
    result = tick()
    watched = _observed(result)
    flagged = [j["hour"] for j in watched if j["flagged"]]
    assert flagged == ["2026-03-05T10:00:00", "2026-03-05T11:00:00", "2026-03-05T12:00:00"]
    assert [title for title, _ in SENT] == ["Champion degraded within the hour"] * 3 + ["Retraining requested"]
    (request,) = result.run_requests
    assert request.tags[TRIGGER_TAG] == "champion_watch_sensor" and "3 hours in a row" in request.tags["mlops/reasons"]
    # 13:00 is still open: judged on the next tick, whole.
    assert "2026-03-05T13:00:00" not in [j["hour"] for j in watched]


def test_an_hour_read_half_written_is_judged_once_with_all_its_requests(watch):
    log, tick = watch
    rng = np.random.default_rng(3)
    _write(log, _records(rng, 0, range(24), 160))
    _write(log, _records(rng, 1, range(14), 160))
    tick()
    late = _records(rng, 1, range(14, 15), 160)
    _write(log, late[:70])
    first = _observed(tick())
    assert all(j["hour"] != "2026-03-02T14:00:00" for j in first)
    _write(log, late[70:] + _records(rng, 1, range(15, 16), 160))
    second = _observed(tick())
    (hour,) = [j for j in second if j["hour"] == "2026-03-02T14:00:00"]
    assert hour["requests"] == 160


def test_a_new_champion_builds_its_own_references(watch):
    log, tick = watch
    rng = np.random.default_rng(5)
    _write(log, _records(rng, 0, range(24), 160))
    _write(log, _records(rng, 1, range(6), 160))
    assert _observed(tick())
    # Version 2 scores higher everywhere: against version 1's references every hour would be flagged.
    records = _records(rng, 1, range(6, 24), 160, shift_from=START, version="2")
    _write(log, records + _records(rng, 2, range(1), 160, shift_from=START, version="2"))
    result = tick()
    assert not _observed(result) and not SENT
    assert "champion 2: 0 hour(s) judged, 0 flagged, 18 filled a reference" in result.skip_reason.skip_message
