"""The verdicts the daily monitoring assets hand to the retraining sensors, as typed records (no dagster).

Each monitoring asset judges its day against the retraining policy and writes a `MonitoringVerdict` as
the metadata of its asset check; the sensors read it back with `MonitoringVerdict.from_metadata`. Writer
and reader share the fields declared here, so a field renamed on one side is an error naming it on the
other, never a retraining that silently stops. The builders below decide `triggered` and word the reason.
"""

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

FEATURE_DRIFT = "feature_drift"
PREDICTION_DRIFT = "prediction_drift"
LABEL_VOLUME = "label_volume"
CONCEPT_DRIFT = "concept_drift"
ESTIMATED_PERFORMANCE = "estimated_performance"
# Not an asset's check: champion_watch_sensor's hourly judgement, when it asks for a retraining.
CHAMPION_WATCH = "champion_watch"


class VerdictError(ValueError):
    """Metadata that is not a verdict; the message names the missing or invalid field."""


@dataclass(frozen=True)
class Kind:
    """What a field may hold: `description` completes "must be ..." in an error."""

    description: str
    accepts: Callable[[object], bool]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_day(value: object) -> bool:
    try:
        return isinstance(value, str) and dt.date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


TEXT = Kind("a string", lambda v: isinstance(v, str))
REASON = Kind("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
DAY = Kind("an ISO date (YYYY-MM-DD)", _is_day)
BOOLEAN = Kind("a boolean", lambda v: isinstance(v, bool))
INTEGER = Kind("an integer", _is_integer)
NUMBER = Kind("a finite number", _is_number)
OPTIONAL_NUMBER = Kind("a finite number or null", lambda v: v is None or _is_number(v))
OPTIONAL_TEXT = Kind("a string or null", lambda v: v is None or isinstance(v, str))
TEXTS = Kind("a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v))

CORE_FIELDS: dict[str, Kind] = {"asset": TEXT, "day": DAY, "triggered": BOOLEAN, "reason": REASON}
# The measured values each asset's verdict carries beside the core fields, with the threshold that decided it.
VALUE_FIELDS: dict[str, dict[str, Kind]] = {
    FEATURE_DRIFT: {
        "share_drifted": OPTIONAL_NUMBER,
        "threshold": NUMBER,
        "drifted_features": TEXTS,
        "transactions": INTEGER,
    },
    PREDICTION_DRIFT: {"psi": OPTIONAL_NUMBER, "threshold": NUMBER},
    LABEL_VOLUME: {
        "new_labels_since_cutoff": INTEGER,
        "threshold": INTEGER,
        # The newest cutoff any model learnt from, and whose it is ("champion" or "last candidate").
        "training_cutoff": OPTIONAL_TEXT,
        "counted_from": TEXT,
    },
    CONCEPT_DRIFT: {
        "recent_recall": OPTIONAL_NUMBER,
        "reference_recall": OPTIONAL_NUMBER,
        "recall_p_value": OPTIONAL_NUMBER,
        "page_hinkley_alarm": BOOLEAN,
        "calibration_ece": OPTIONAL_NUMBER,
        "calibration_bound": OPTIONAL_NUMBER,
        "confidence": NUMBER,
        "page_hinkley_threshold": NUMBER,
        # How many transactions count as one independent fraud in the recall test (frauds cluster by card).
        "recall_design_effect": OPTIONAL_NUMBER,
        # Promoted below the quality minimums (as better than a failing champion): retrained at every cool-down.
        "provisional_champion": BOOLEAN,
    },
    ESTIMATED_PERFORMANCE: {
        "estimated_auc_pr": OPTIONAL_NUMBER,
        "estimated_auc_pr_high": OPTIONAL_NUMBER,
        "reference_auc_pr": OPTIONAL_NUMBER,
        "max_drop": NUMBER,
    },
    CHAMPION_WATCH: {"hour": TEXT, "flagged_hours_in_a_row": INTEGER, "threshold": INTEGER},
}


def _checked(where: str, fields: Mapping[str, Kind], source: Mapping[str, object]) -> dict[str, object]:
    values = {}
    for name, kind in fields.items():
        if name not in source:
            raise VerdictError(f"{where}: field {name!r} is missing")
        value = source[name]
        if not kind.accepts(value):
            raise VerdictError(f"{where}: field {name!r} must be {kind.description}, got {value!r}")
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


@dataclass(frozen=True)
class MonitoringVerdict:
    """One monitoring asset's judgement of one day: does it ask for retraining, why, and the values behind it."""

    asset: str
    day: str
    triggered: bool
    reason: str
    values: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        core = _checked(
            "monitoring verdict",
            CORE_FIELDS,
            {"asset": self.asset, "day": self.day, "triggered": self.triggered, "reason": self.reason},
        )
        if core["asset"] not in VALUE_FIELDS:
            raise VerdictError(
                f"monitoring verdict: field 'asset' must be one of {sorted(VALUE_FIELDS)}, got {self.asset!r}"
            )
        expected = VALUE_FIELDS[self.asset]
        unknown = sorted(set(self.values) - set(expected))
        if unknown:
            raise VerdictError(f"{self.asset} verdict: unknown value field(s) {unknown}; declared: {sorted(expected)}")
        object.__setattr__(self, "values", _checked(f"{self.asset} verdict", expected, self.values))

    def to_metadata(self) -> dict[str, object]:
        """Flat metadata: the core fields and every value, lists as JSON lists."""
        values = {name: list(value) if isinstance(value, tuple) else value for name, value in self.values.items()}
        return {"asset": self.asset, "day": self.day, "triggered": self.triggered, "reason": self.reason, **values}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object]) -> "MonitoringVerdict":
        """The verdict `to_metadata` wrote (plain values, not dagster MetadataValues). Raises VerdictError
        naming the first field that is missing or of the wrong kind; other keys are ignored."""
        core = _checked("monitoring verdict", CORE_FIELDS, metadata)
        if core["asset"] not in VALUE_FIELDS:
            raise VerdictError(
                f"monitoring verdict: field 'asset' must be one of {sorted(VALUE_FIELDS)}, got {core['asset']!r}"
            )
        values = _checked(f"{core['asset']} verdict", VALUE_FIELDS[core["asset"]], metadata)
        return cls(values=values, **core)


def finite(value: float | None) -> float | None:
    """NaN or an infinity (no frauds, no labels yet) as None: a verdict's numbers are finite or null."""
    return None if value is None or not math.isfinite(value) else float(value)


def feature_drift_verdict(
    day: dt.date, share_drifted: float | None, drifted_features: Sequence[str], transactions: int, threshold: float
) -> MonitoringVerdict:
    """Retrain when at least `threshold` of the day's features drifted; no verdict on a day without transactions."""
    values = {
        "share_drifted": finite(share_drifted),
        "threshold": float(threshold),
        "drifted_features": tuple(drifted_features),
        "transactions": int(transactions),
    }
    share = values["share_drifted"]
    if share is None:
        return MonitoringVerdict(
            FEATURE_DRIFT, day.isoformat(), False, f"no verdict on {day}: no transactions to compare", values
        )
    if share >= threshold:
        named = ", ".join(drifted_features[:5]) + (", ..." if len(drifted_features) > 5 else "")
        return MonitoringVerdict(
            FEATURE_DRIFT,
            day.isoformat(),
            True,
            f"feature drift on {day}: {share:.0%} of features drifted ({named})",
            values,
        )
    return MonitoringVerdict(
        FEATURE_DRIFT,
        day.isoformat(),
        False,
        f"{share:.0%} of features drifted on {day}, under the {threshold:.0%} that retrains",
        values,
    )


def prediction_drift_verdict(day: dt.date, psi: float | None, threshold: float, note: str = "") -> MonitoringVerdict:
    """Retrain when the PSI of the champion's served scores against its first days reaches `threshold`;
    `note` says why there is no PSI (no champion, too few scores)."""
    values = {"psi": finite(psi), "threshold": float(threshold)}
    if values["psi"] is None:
        return MonitoringVerdict(
            PREDICTION_DRIFT, day.isoformat(), False, f"no verdict on {day}: {note or 'no PSI'}", values
        )
    if psi >= threshold:
        reason = (
            f"prediction drift on {day}: score PSI {psi:.2f} against the champion's first days (>= {threshold:.2f})"
        )
        return MonitoringVerdict(PREDICTION_DRIFT, day.isoformat(), True, reason, values)
    return MonitoringVerdict(
        PREDICTION_DRIFT,
        day.isoformat(),
        False,
        f"score PSI {psi:.2f} on {day}, under the {threshold:.2f} that retrains",
        values,
    )


def label_volume_verdict(
    day: dt.date, new_labels: int, threshold: int, cutoff: str | None, counted_from: str = "champion"
) -> MonitoringVerdict:
    """Retrain when `threshold` labels or more arrived after the newest training cutoff: the champion's, or
    the last candidate's (`counted_from`) when a newer one learnt from more labels."""
    values = {
        "new_labels_since_cutoff": int(new_labels),
        "threshold": int(threshold),
        "training_cutoff": cutoff,
        "counted_from": counted_from,
    }
    if new_labels >= threshold:
        reason = (
            f"label volume on {day}: {new_labels} labels since the {counted_from}'s training cutoff (>= {threshold})"
        )
        return MonitoringVerdict(LABEL_VOLUME, day.isoformat(), True, reason, values)
    return MonitoringVerdict(
        LABEL_VOLUME,
        day.isoformat(),
        False,
        f"{new_labels} labels since the {counted_from}'s training cutoff on {day}, under {threshold}",
        values,
    )


def concept_drift_verdict(
    day: dt.date,
    *,
    confidence: float,
    page_hinkley_threshold: float,
    recall: Mapping[str, float | bool] | None = None,
    reference_recall: float | None = None,
    alarm_at: object = None,
    calibration: Mapping[str, float | bool] | None = None,
    provisional: str | None = None,
    note: str = "",
) -> MonitoringVerdict:
    """Retrain when any of the three tests fires: `recall` (from performance.recall_drop, judged only
    against a known `reference_recall`), a Page-Hinkley alarm at `alarm_at`, `calibration` (from
    performance.calibration_drift); or while the champion is `provisional` (why: it was promoted below the
    quality minimums, as better than a failing champion). Its own recall is then no norm to hold it to, and
    each retraining learns more of the new pattern's labels; the sensor's cool-down spaces them. Without a
    champion, `note` says so and nothing fires."""
    values = {
        "recent_recall": finite(recall["recall"]) if recall else None,
        "reference_recall": finite(reference_recall),
        "recall_p_value": finite(recall["p_value"]) if recall else None,
        "page_hinkley_alarm": alarm_at is not None,
        "calibration_ece": finite(calibration["ece"]) if calibration else None,
        "calibration_bound": finite(calibration["bound"]) if calibration else None,
        "confidence": float(confidence),
        "page_hinkley_threshold": float(page_hinkley_threshold),
        "recall_design_effect": finite(recall.get("design_effect")) if recall else None,
        "provisional_champion": provisional is not None,
    }
    fired = []
    if recall and reference_recall is not None and recall["drop"]:
        independent = (
            f" ({recall['effective_frauds']} independent, design effect {recall['design_effect']:.2f})"
            if recall.get("design_effect", 1.0) > 1
            else ""
        )
        fired.append(
            f"recall {recall['recall']:.2f} on {recall['frauds']} recent frauds{independent} vs {reference_recall:.2f} at promotion (p={recall['p_value']:.1e})"
        )
    if alarm_at is not None:
        fired.append(
            f"Page-Hinkley alarm on matured decision errors at {alarm_at} (threshold {page_hinkley_threshold:.0f})"
        )
    if calibration and calibration["drift"]:
        fired.append(f"calibration error {calibration['ece']:.3f} above its bound {calibration['bound']:.3f}")
    if provisional is not None:
        fired.append(f"provisional champion: {provisional}")
    if fired:
        return MonitoringVerdict(
            CONCEPT_DRIFT, day.isoformat(), True, f"model degraded on {day}: " + "; ".join(fired), values
        )
    if note:
        return MonitoringVerdict(CONCEPT_DRIFT, day.isoformat(), False, f"no verdict on {day}: {note}", values)
    return MonitoringVerdict(
        CONCEPT_DRIFT,
        day.isoformat(),
        False,
        f"the champion holds on {day}: recall, matured errors and calibration within bounds",
        values,
    )


def estimated_performance_verdict(
    day: dt.date,
    estimated: float | None,
    high: float | None,
    reference: float | None,
    max_drop: float,
    note: str = "",
) -> MonitoringVerdict:
    """Retrain when even the upper bound of the day's estimated AUC-PR (calibrated CBPE, before any label)
    lies more than `max_drop` (relative) below the champion's realized AUC-PR on its reference."""
    values = {
        "estimated_auc_pr": finite(estimated),
        "estimated_auc_pr_high": finite(high),
        "reference_auc_pr": finite(reference),
        "max_drop": float(max_drop),
    }
    if values["estimated_auc_pr_high"] is None or values["reference_auc_pr"] is None:
        return MonitoringVerdict(
            ESTIMATED_PERFORMANCE, day.isoformat(), False, f"no verdict on {day}: {note or 'no estimate'}", values
        )
    floor = (1 - max_drop) * reference
    if high < floor:
        reason = (
            f"estimated performance drop on {day}: AUC-PR estimated {estimated:.3f} (at most {high:.3f}) against "
            f"{reference:.3f} on the champion's reference (floor {floor:.3f})"
        )
        return MonitoringVerdict(ESTIMATED_PERFORMANCE, day.isoformat(), True, reason, values)
    return MonitoringVerdict(
        ESTIMATED_PERFORMANCE,
        day.isoformat(),
        False,
        f"AUC-PR estimated {estimated:.3f} (up to {high:.3f}) on {day}, not below the floor {floor:.3f}",
        values,
    )
