"""How every command line of the project reads its config and fails: one line on stderr that says what to do.

`python train.py`, `python -m deploy`, `python -m ami` and `python -m dogbreed.storage` run their
work inside `reported_errors`. Exit statuses:

    0      done
    1      a project error (DogbreedError) or an AWS problem: a refused call, no credentials,
           no region, an unreachable endpoint
    2      bad usage: argparse errors, overrides Hydra cannot apply (errors with exit_code 2)
    128+N  a training run stopped by signal N, after its checkpoint (TrainingInterrupted)

Any other exception is a bug and keeps its traceback. `--debug` or DOGBREED_DEBUG=1 lets the
handled ones through with their tracebacks too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from dogbreed.errors import DogbreedError

if TYPE_CHECKING:
    from omegaconf import DictConfig

EXIT_ERROR = 1
EXIT_USAGE = 2
DEBUG_ENV = "DOGBREED_DEBUG"
# The project's Hydra configs: train.yaml (train.py), deploy.yaml (python -m deploy), ami.yaml (python -m ami).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class OverrideError(DogbreedError):
    """A `key=value` override Hydra cannot apply: bad usage, so the command exits 2 like argparse."""

    exit_code = EXIT_USAGE


def compose_config(name: str, overrides: list[str], example: str) -> DictConfig:
    """`conf/<name>.yaml` composed with `overrides`, as `python -m deploy` and `python -m ami` read theirs.

    Raises:
        OverrideError: Hydra cannot apply an override; one line naming it and an `example` of the form.
    """
    from hydra import compose, initialize_config_dir  # here: the commands that never compose stay light

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=name, overrides=overrides)
    except Exception as err:  # Hydra's override and composition errors have several unrelated types
        problem = " ".join(str(err).split())  # Hydra's message spans lines; the CLI prints one
        raise OverrideError(f"bad override ({problem}); overrides look like {example}") from err


class Progress:
    """How far `python train.py` got: an exit 1 before a job started is Hydra refusing the command
    line (bad usage, exit 2). A job starts in `train.py`'s task or in a launcher that runs it elsewhere."""

    job_started = False


# A parent parser: pass it to the root parser and every subcommand's, so `--debug` works on
# either side of the subcommand name.
DEBUG_OPTION = argparse.ArgumentParser(add_help=False)
DEBUG_OPTION.add_argument(
    "--debug",
    action="store_true",
    default=argparse.SUPPRESS,  # a subcommand's default would overwrite a root-level --debug
    help=f"show the traceback of an error instead of one line (or set {DEBUG_ENV}=1)",
)

# AWS error codes grouped by what the user has to do about them.
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError", "Forbidden", "403"}
BAD_CREDENTIALS = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
}
THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "SlowDown"}


@contextmanager
def reported_errors(debug: bool = False, region_setting: str | None = None) -> Iterator[None]:
    """Turns the errors a user can act on into one stderr line and an exit status (see the module doc).

    Args:
        debug: let those errors through with their tracebacks (also when DOGBREED_DEBUG=1).
        region_setting: the flag or config key that sets this command's AWS region, named when
            there is none, e.g. "deploy.region=<region>".

    Raises:
        SystemExit: with the error's exit status, after printing its line.
    """
    try:
        yield
    except Exception as err:
        line = explain(err, region_setting)
        if line is None or debug or os.environ.get(DEBUG_ENV) == "1":
            raise
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(getattr(err, "exit_code", EXIT_ERROR)) from None


def explain(err: Exception, region_setting: str | None = None) -> str | None:
    """What went wrong and what to do about it; None for an error that is a bug."""
    if isinstance(err, DogbreedError):
        return str(err)  # written to be read as it is
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        code = error.get("Code", "Unknown")
        # AWS messages can span lines; the contract is one line.
        message = " ".join(str(error.get("Message", "")).split())
        return f"AWS refused {err.operation_name}: {code}: {message} — {_client_error_advice(code)}"
    if isinstance(err, NoCredentialsError):
        return (
            f"no AWS credentials: {err} — set AWS_PROFILE, run `aws configure`, "
            "or run where an instance profile provides them"
        )
    if isinstance(err, NoRegionError):
        settings = [s for s in (region_setting, "AWS_DEFAULT_REGION", "region in `aws configure`") if s]
        return f"no AWS region: set {', '.join(settings[:-1])} or {settings[-1]}"
    if isinstance(err, EndpointConnectionError):
        return f"{err} — check the network connection (or proxy) and the region name"
    if isinstance(err, BotoCoreError):
        return f"AWS client error: {err} — check the AWS profile, credentials and region"
    return None


def _client_error_advice(code: str) -> str:
    if code in DENIED:
        return "check the credentials' permissions (`aws sts get-caller-identity` shows whose they are)"
    if code in BAD_CREDENTIALS:
        return "the credentials are invalid or expired: renew them (`aws configure`, `aws sso login`)"
    if code in THROTTLED:
        return "AWS is limiting the request rate: wait a minute, then run the command again"
    return "fix what AWS names, then run the command again"
