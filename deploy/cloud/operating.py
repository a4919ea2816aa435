"""The operating parts of `up`, `down` and `status`: alarms, the rollout of a new model, data capture,
which version is live.

The orchestrator calls these with the validated `deploy` section; they read the `alarms`,
`rollout`, `data_capture` and `serverless` keys and pass plain values to `alarms.py` and `rollout.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deploy.cloud import alarms, hosting, rollout
from deploy.cloud.errors import DeployError
from dogbreed.storage.location import S3Location
from dogbreed.storage.transfer import head_or_none, recorded_sha256


@dataclass(frozen=True)
class Release:
    """A model already in S3 that `up` can deploy without packaging: a registered version or a past deploy."""

    run: str
    model_data: str
    model_sha256: str | None = None
    model_version: int | None = None
    model_package: str | None = None


def data_capture(d: Any, bucket: str, deploy_prefix: str) -> dict[str, Any] | None:
    """The endpoint config's DataCaptureConfig: `deploy.data_capture.percent` of requests and responses
    to `<s3_uri>/<name>/capture/`; None when the percent is 0."""
    percent = d.data_capture.percent
    if not percent:
        return None
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": int(percent),
        "DestinationS3Uri": f"s3://{bucket}/{deploy_prefix}/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        # JSON bodies are stored as text; images are stored base64-encoded.
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }


def alarm_names(endpoint: str, function: str) -> list[str]:
    """This deploy's alarm names (they do not depend on the thresholds)."""
    made = alarms.endpoint_alarms(endpoint, hosting.VARIANT, 1, 1) + alarms.lambda_alarms(function)
    return [a["AlarmName"] for a in made]


def ensure_alarms(d: Any, clients: Any, endpoint: str, function: str, changes: list[str]) -> list[str]:
    """Sets the alarms (or removes them when `deploy.alarms.enabled=false`); returns the rollback alarms."""
    if not d.alarms.enabled:
        changes += [f"deleted {item}" for item in remove_alarms(clients, endpoint, function)]
        return []
    topic = _topic_name(endpoint)
    actions: list[str] = []
    if d.alarms.email:
        arn, subscribed = alarms.ensure_topic(clients.sns, topic, d.alarms.email)
        actions.append(arn)
        if subscribed:
            changes.append(f"topic {topic}: confirm the e-mail AWS sent to {d.alarms.email}")
    elif alarms.topic_exists(clients.sns, existing := _topic_arn(clients, topic)):
        alarms.delete_topic(clients.sns, existing)
        changes.append(f"deleted topic {topic}")
    endpoint_alarms = _endpoint_alarms(d, endpoint)
    changed = alarms.ensure_alarms(clients.cloudwatch, endpoint_alarms + alarms.lambda_alarms(function), actions)
    changes += [f"alarm {name}" for name in changed]
    return [a["AlarmName"] for a in endpoint_alarms]


def remove_alarms(clients: Any, endpoint: str, function: str) -> list[str]:
    """Deletes the alarms and the topic; returns what went."""
    removed = [f"alarm {name}" for name in alarms.delete_alarms(clients.cloudwatch, alarm_names(endpoint, function))]
    if alarms.topic_exists(clients.sns, arn := _topic_arn(clients, _topic_name(endpoint))):
        alarms.delete_topic(clients.sns, arn)
        removed.append(f"topic {_topic_name(endpoint)}")
    return removed


def prepare_update(d: Any, clients: Any, endpoint: str, function: str, changes: list[str]) -> dict[str, Any] | None:
    """Sets the alarms; returns the DeploymentConfig an update of the endpoint carries."""
    rollback_alarms = ensure_alarms(d, clients, endpoint, function, changes)
    live = hosting.describe_endpoint(clients.sagemaker, endpoint) or {}
    running = (live.get("ProductionVariants") or [{}])[0].get("CurrentInstanceCount", d.instance_count)
    return deployment(d, rollback_alarms, min(running, d.instance_count))


def deployment(d: Any, rollback_alarms: list[str], instances: int) -> dict[str, Any] | None:
    """The DeploymentConfig of an update of a fleet of `instances`; serverless always switches all at once."""
    mode = "all_at_once" if d.serverless.enabled else d.rollout.mode
    return rollout.deployment_config(mode, d.rollout.canary_percent, d.rollout.wait_s, rollback_alarms, instances)


def check_landed(clients: Any, endpoint: str, function: str, config: str) -> None:
    """Raises DeployError, naming the alarms that fired, when the update was rolled back."""
    description = hosting.describe_endpoint(clients.sagemaker, endpoint)
    if description is None:
        raise DeployError(f"endpoint {endpoint} disappeared during the update")
    if description["EndpointConfigName"] != config:
        rollout.check_landed(description, config, alarms.states(clients.cloudwatch, alarm_names(endpoint, function)))


def check_release(s3: Any, release: Release) -> tuple[str, str]:
    """The release's model URI and SHA-256, once the object is known to be there."""
    location = S3Location.parse(release.model_data)
    head = head_or_none(s3, location, checksums=True)
    if head is None:
        raise DeployError(f"{release.model_data} is gone; register or deploy the run {release.run} again")
    return release.model_data, recorded_sha256(head) or release.model_sha256 or ""


def release_record(old: dict[str, Any] | None, new: dict[str, Any], release: Release | None) -> dict[str, Any]:
    """The state keys that say which version is live and which was live before it (what `rollback` returns to)."""
    live = {
        "model_version": release.model_version if release else None,
        "model_package": release.model_package if release else None,
    }
    previous: dict[str, Any] | None = (old or {}).get("previous")
    if old and old.get("model_data") and old["model_data"] != new["model_data"]:
        keep = ("run", "model_data", "model_sha256", "model_version", "model_package")
        previous = {key: old.get(key) for key in keep}
    return {**live, "previous": previous}


def previous_release(record: dict[str, Any] | None) -> Release:
    """What was live before the current model, from the state file."""
    previous = (record or {}).get("previous")
    if not previous:
        raise DeployError("nothing to roll back to: the state file records no earlier model for this deploy")
    return Release(**previous)


def status_rows(clients: Any, endpoint: str, function: str, record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The live model (registry version or run) and each alarm's state."""
    rows = []
    if record.get("model_data"):
        version = record.get("model_version")
        rows.append(("live model", f"version {version}" if version else record.get("run", "?"), record["model_data"]))
    states = alarms.states(clients.cloudwatch, alarm_names(endpoint, function))
    rows += [("alarm", name, state) for name, state in states.items()]
    return rows


def _endpoint_alarms(d: Any, endpoint: str) -> list[dict[str, Any]]:
    a = d.alarms
    return alarms.endpoint_alarms(endpoint, hosting.VARIANT, a.latency_p99_ms, a.error_4xx_rate)


def _topic_name(endpoint: str) -> str:
    return f"{endpoint}-alarms"


def _topic_arn(clients: Any, name: str) -> str:
    caller = clients.sts.get_caller_identity()["Arn"].split(":")
    partition, account = caller[1], caller[4]
    return f"arn:{partition}:sns:{clients.region}:{account}:{name}"
