"""The newest Deep Learning AMI, resolved through its SSM public parameter (never a hard-coded id)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ami.errors import AmiError


def latest_ami_id(ssm: Any, parameter: str) -> str:
    """The AMI id that `parameter` (e.g. /aws/service/deeplearning/ami/x86_64/<type>/latest/ami-id) points at."""
    try:
        return ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    except ClientError as err:
        if err.response["Error"]["Code"] == "ParameterNotFound":
            raise AmiError(
                f"no SSM parameter {parameter} in this region; list the DLAMI types with "
                "aws ssm get-parameters-by-path --path /aws/service/deeplearning/ami/x86_64 --recursive "
                "and set ami.ami_ssm_parameter"
            ) from err
        raise
