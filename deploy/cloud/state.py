"""The deploy state file: what `up` created, by name and ARN, kept in the run dir and at the S3 prefix.

`down` and `status` read the S3 copy, so they work from any machine; the local copy
sits next to the weights it describes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from deploy.cloud.artifacts import join_key
from dogbreed.storage.location import S3Location
from dogbreed.storage.transfer import get_json, put_json

STATE_NAME = "deploy-state.json"


def state_key(prefix: str, name: str) -> str:
    """The state file's key under the deploy prefix."""
    return join_key(prefix, name, STATE_NAME)


def load(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The recorded state, or None when nothing was deployed under this name."""
    return get_json(s3, S3Location(bucket, key))


def save(s3: Any, bucket: str, key: str, state: dict[str, Any], run_dir: Path | None) -> bool:
    """Writes the state to S3 and into `run_dir` (when local) if it changed; returns whether it did."""
    changed = load(s3, bucket, key) != state
    if changed:
        put_json(s3, S3Location(bucket, key), state)
    if run_dir is not None and run_dir.is_dir():
        local = run_dir / STATE_NAME
        if not local.is_file() or json.loads(local.read_text()) != state:
            partial = local.with_name(local.name + ".part")
            partial.write_text(json.dumps(state, indent=2))
            os.replace(partial, local)  # readers never see half a file
    return changed


def forget(s3: Any, bucket: str, key: str, state: dict[str, Any] | None) -> None:
    """Removes both copies after `down`."""
    s3.delete_object(Bucket=bucket, Key=key)
    run_dir = (state or {}).get("run_dir")
    if run_dir:
        (Path(run_dir) / STATE_NAME).unlink(missing_ok=True)
