"""SageMaker Batch Transform: `python -m deploy predict s3://... --sagemaker`, for inputs too large for one machine.

The job runs a SageMaker model (the one `up` created; `python -m deploy status` names it) over
every object under an S3 prefix, one image per request as the endpoint gets them, and writes one
`<key>.out` JSON answer per image under the output prefix. The model's execution role reads the
input and writes the output, so both must be where that role may go.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from deploy.cloud.errors import DeployError

log = logging.getLogger(__name__)

MAX_PAYLOAD_MB = 6  # the endpoint's body cap, so an image the endpoint takes is one the job takes


def job_name(model: str, now: datetime | None = None) -> str:
    """`<model>-<UTC timestamp>`, within SageMaker's 63 characters; starts like the model, as IAM scopes it."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S")
    return f"{model[:47].rstrip('-')}-{stamp}"


def transform_request(
    name: str, model: str, input_uri: str, output_uri: str, instance_type: str, instance_count: int
) -> dict[str, Any]:
    """The CreateTransformJob request: each object under `input_uri` is one image request."""
    return {
        "TransformJobName": name,
        "ModelName": model,
        "BatchStrategy": "SingleRecord",
        "MaxPayloadInMB": MAX_PAYLOAD_MB,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": "application/x-image",
            "SplitType": "None",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": "application/json", "AssembleWith": "None"},
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
    }


def submit(sm: Any, request: dict[str, Any]) -> str:
    """Starts the job and returns its ARN; does not wait (jobs take minutes to hours)."""
    try:
        arn = sm.create_transform_job(**request)["TransformJobArn"]
    except ClientError as err:
        error = err.response.get("Error", {})
        raise DeployError(
            f"SageMaker refused the batch transform job for model {request['ModelName']}: "
            f"{error.get('Code')}: {error.get('Message')}"
        ) from err
    log.info("started batch transform job %s", request["TransformJobName"])
    return str(arn)
