"""The whole deploy flow against real AWS: train a tiny run, `up`, `up` again, invoke, `status`, `down`.

Opt-in only (it costs money, minutes and needs deploy/iam/deployer-policy.json):
`DOGBREED_INTEG=1 DOGBREED_INTEG_S3_URI=s3://bucket/prefix pytest -m integ tests/deploy/test_integ.py`.
Extra deploy overrides go in DOGBREED_INTEG_OVERRIDES (space-separated), e.g.
`deploy.serverless.enabled=true deploy.lambda.provisioned_concurrency=0` for the cheapest run.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from omegaconf import DictConfig

from deploy.cloud import orchestrator
from deploy.cloud.config import load_config
from dogbreed.train.run import train
from dogbreed.train.settings import run_settings

pytestmark = [
    pytest.mark.integ,
    pytest.mark.skipif(
        os.environ.get("DOGBREED_INTEG") != "1"
        or not os.environ.get("DOGBREED_INTEG_S3_URI")
        or boto3.Session().get_credentials() is None,
        reason="real AWS: needs credentials, DOGBREED_INTEG=1 and DOGBREED_INTEG_S3_URI",
    ),
]

COURSE_EVENT = {"url": "https://s3.amazonaws.com/cdn-origin-etl-tool/BlogImages/2019/06/13/dog.jpg"}


@pytest.fixture
def deployed(make_cfg: Callable[..., DictConfig]) -> Iterator[tuple[DictConfig, orchestrator.Clients, str]]:
    train_cfg = make_cfg(["trainer.epochs=1"])
    train(run_settings(train_cfg))
    name = f"dogbreed-integ-{uuid.uuid4().hex[:6]}"
    cfg = load_config(
        [
            f"deploy.name={name}",
            f"deploy.s3_uri={os.environ['DOGBREED_INTEG_S3_URI']}",
            "deploy.delete_artifacts=true",
            *os.environ.get("DOGBREED_INTEG_OVERRIDES", "").split(),
        ]
    )
    clients = orchestrator.Clients.create(cfg.deploy.region)
    try:
        yield cfg, clients, str(train_cfg.paths.output_dir)
    finally:
        orchestrator.down(cfg, clients)  # never leave a billing endpoint behind, whatever failed


def test_up_invoke_and_down_on_real_aws(deployed: tuple[DictConfig, orchestrator.Clients, str]) -> None:
    cfg, clients, run = deployed
    name = cfg.deploy.name
    assert orchestrator.up(cfg, run, clients)
    assert orchestrator.up(cfg, run, clients) == []  # idempotent against the real services too
    assert Path(run, "deploy-state.json").is_file()

    reply = clients.lambda_.invoke(
        FunctionName=f"{name}-invoke", Qualifier="live", Payload=json.dumps(COURSE_EVENT).encode()
    )
    response = json.loads(reply["Payload"].read())
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["predictions"]

    rows = {(kind, resource): state for kind, resource, state in orchestrator.status(cfg, clients)}
    assert rows[("endpoint", name)] == "InService"

    assert orchestrator.down(cfg, clients)
    rows = {(kind, resource): state for kind, resource, state in orchestrator.status(cfg, clients)}
    assert rows[("endpoint", name)] == "absent"
    assert rows[("function", f"{name}-invoke")] == "absent"
