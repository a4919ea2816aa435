"""A Deep Learning AMI in moto: an image and the SSM public parameter that names it."""

from __future__ import annotations

import datetime as dt

import boto3
from moto.backends import get_backend
from moto.ssm.models import Parameter


def register_dlami(parameter: str) -> str:
    """Registers an image and points `parameter` at it; returns the image id.

    put_parameter refuses names under /aws, so the parameter goes straight into the moto
    backend this process shares with the ThreadedMotoServer.
    """
    image_id = boto3.client("ec2").register_image(
        Name="Deep Learning PyTorch test image",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 75}}],
        Architecture="x86_64",
    )["ImageId"]
    account = boto3.client("sts").get_caller_identity()["Account"]
    get_backend("ssm")[account]["us-east-1"]._parameters[parameter].append(
        Parameter(
            account_id=account,
            name=parameter,
            value=image_id,
            parameter_type="String",
            description=None,
            allowed_pattern=None,
            keyid=None,
            last_modified_date=dt.datetime.now(dt.timezone.utc),
            version=1,
            data_type="aws:ec2:image",
        )
    )
    return image_id
