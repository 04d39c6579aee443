"""A stand-in for dagster-daemon's sensor loop, run in process so a simulation is deterministic.

Each `tick` evaluates one sensor of the code location against the real instance with its stored
cursor, as the daemon does, and executes every run it requests on that instance, with the run key and
sensor name tags the daemon would add. A run key already used by the sensor launches nothing.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg


def failed_checks(result: dg.ExecuteInProcessResult) -> tuple[str, ...]:
    """The run's failed blocking checks, each with its description when it has one."""
    return tuple(
        f"{e.check_name} ({e.description})" if e.description else e.check_name
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    )


def _merge(base: dict | None, request: dict | None) -> dict:
    """The job's run config here, with the request's own config (a rollback's version and reason) on top."""
    merged = dict(base or {})
    for key, value in (request or {}).items():
        merged[key] = (
            _merge(merged.get(key), value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


@dataclass(frozen=True)
class LaunchedRun:
    sensor: str
    job: str
    run_id: str
    success: bool
    reasons: str
    failed_checks: tuple[str, ...]


@dataclass(frozen=True)
class TickResult:
    sensor: str
    skip_message: str | None
    runs: tuple[LaunchedRun, ...]
    # The observations the tick recorded (the daemon stores a sensor's asset events; so does this one).
    observations: tuple[dg.AssetObservation, ...] = ()


class InProcessDaemon:
    def __init__(self, defs: dg.Definitions, state_path: Path, run_configs: dict[str, dict] | None = None) -> None:
        self.defs = defs
        self.state_path = state_path
        self.run_configs = run_configs or {}
        self.cursors: dict[str, str | None] = json.loads(state_path.read_text()) if state_path.exists() else {}

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(self.cursors))

    def tick(self, sensor_name: str) -> TickResult:
        sensor = self.defs.resolve_sensor_def(sensor_name)
        with dg.DagsterInstance.get() as instance:
            context = dg.build_sensor_context(
                instance=instance,
                cursor=self.cursors.get(sensor_name),
                definitions=self.defs,
                resources={key: self.defs.resources[key] for key in sensor.required_resource_keys},
            )
            data = sensor.evaluate_tick(context)
            self.cursors[sensor_name] = data.cursor
            self._save()
            observations = tuple(e for e in data.asset_events or [] if isinstance(e, dg.AssetObservation))
            for event in data.asset_events or []:
                instance.report_runless_asset_event(event)
            runs = []
            for request in data.run_requests or []:
                key = request.run_key
                if key and instance.get_runs(
                    dg.RunsFilter(tags={"dagster/sensor_name": sensor_name, "dagster/run_key": key}), limit=1
                ):
                    continue
                job = self.defs.resolve_job_def(request.job_name or sensor.job_name)
                tags = {**request.tags, "dagster/sensor_name": sensor_name, **({"dagster/run_key": key} if key else {})}
                result = job.execute_in_process(
                    instance=instance,
                    tags=tags,
                    run_config=_merge(self.run_configs.get(job.name), request.run_config),
                    raise_on_error=False,
                )
                runs.append(
                    LaunchedRun(
                        sensor_name,
                        job.name,
                        result.run_id,
                        result.success,
                        request.tags.get("mlops/reasons", ""),
                        failed_checks(result),
                    )
                )
        return TickResult(sensor_name, data.skip_message, tuple(runs), observations)
