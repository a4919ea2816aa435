"""The Lambda front door: code zip, function, `live` alias, concurrency, optional function URL."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deploy.cloud.errors import DeployError
from dogbreed.aws.iam import retry_while_role_propagates

log = logging.getLogger(__name__)

ALIAS = "live"
RUNTIME = "python3.12"
HANDLER = "lambda_function.lambda_handler"
HANDLER_FILE = "lambda_function.py"
# A fixed timestamp keeps the zip, and so CodeSha256, identical for identical sources.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# What a published version freezes and `live` must match.
VERSIONED = ("CodeSha256", "Role", "Handler", "Runtime", "Timeout", "MemorySize", "Environment")
PC_NOT_FOUND = ("ProvisionedConcurrencyConfigNotFoundException", "ResourceNotFoundException")
PUBLIC_URL_STATEMENTS = ("public-url-invoke-url", "public-url-invoke-function")


def zip_folder(folder: Path) -> bytes:
    """Zips the handler folder reproducibly (sorted names, fixed dates, no bytecode).

    Raises:
        DeployError: the folder or its `lambda_function.py` is missing.
    """
    if not (folder / HANDLER_FILE).is_file():
        raise DeployError(f"{folder / HANDLER_FILE} not found; set deploy.lambda.source_dir to the handler folder")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buffer.getvalue()


def code_sha256(zip_bytes: bytes) -> str:
    """The digest Lambda reports as `CodeSha256` (base64 SHA-256 of the zip)."""
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()


def ensure_function(
    lam: Any, name: str, role_arn: str, zip_bytes: bytes, settings: dict[str, Any], tags: dict[str, str] | None = None
) -> bool:
    """Creates the function, or brings its settings (and code) to what is wanted; returns whether it changed.

    New handler code replaces the function rather than updating it: the deployer policy grants no
    `lambda:UpdateFunctionCode`, because running new code under an existing function's role is the
    privilege-escalation path IAM linters flag. The handler changes only with a new release of this
    project; the replacement gets a new function URL, which `up` prints.

    Args:
        lam: Lambda client.
        name: function name.
        role_arn: execution role.
        zip_bytes: the handler zip.
        settings: `Timeout`, `MemorySize` and `Environment` as Lambda spells them.
    """
    wanted = {"Role": role_arn, "Handler": HANDLER, "Runtime": RUNTIME, **settings}
    current = _configuration(lam, name)
    if current is not None and current["CodeSha256"] != code_sha256(zip_bytes):
        log.warning("the handler code changed: replacing function %s (its function URL changes)", name)
        delete_function(lam, name)
        current = None
    if current is None:
        retry_while_role_propagates(
            lambda: lam.create_function(FunctionName=name, Code={"ZipFile": zip_bytes}, Tags=tags or {}, **wanted),
            _role_not_ready,
        )
        lam.get_waiter("function_active_v2").wait(FunctionName=name)
        log.info("created function %s", name)
        return True
    if all(current.get(key) == value for key, value in wanted.items()):
        return False
    lam.update_function_configuration(FunctionName=name, **wanted)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    log.info("updated settings of %s", name)
    return True


def _configuration(lam: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(lam.get_function(FunctionName=name)["Configuration"])
    except ClientError as err:
        if err.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        return None


def ensure_alias(lam: Any, name: str) -> bool:
    """Points `live` at a version holding the current code and settings, publishing one if needed.

    Compares with what `live` runs rather than trusting this run's own changes, so an `up`
    interrupted between updating the function and publishing is finished by the next one.
    """
    latest = lam.get_function_configuration(FunctionName=name)
    try:
        alias = lam.get_alias(FunctionName=name, Name=ALIAS)
    except ClientError as err:
        if err.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        alias = None
    if alias is not None:
        live = lam.get_function_configuration(FunctionName=name, Qualifier=alias["FunctionVersion"])
        if all(live.get(key) == latest.get(key) for key in VERSIONED):
            return False
    version = lam.publish_version(FunctionName=name, CodeSha256=latest["CodeSha256"])["Version"]
    if alias is None:
        lam.create_alias(FunctionName=name, Name=ALIAS, FunctionVersion=version)
    else:
        lam.update_alias(FunctionName=name, Name=ALIAS, FunctionVersion=version)
    log.info("alias %s of %s -> version %s", ALIAS, name, version)
    return True


def ensure_reserved_concurrency(lam: Any, name: str, reserved: int | None) -> bool:
    """Sets (or with None, removes) the function's reserved concurrency.

    Raises:
        DeployError: the account cannot spare it (Lambda keeps 100 unreserved per account).
    """
    current = lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions")
    if current == reserved:
        return False
    if reserved is None:
        lam.delete_function_concurrency(FunctionName=name)
        return True
    try:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=reserved)
    except ClientError as err:
        if err.response["Error"]["Code"] in ("InvalidParameterValueException", "LimitExceededException"):
            raise DeployError(
                f"Lambda refused reserved concurrency {reserved} for {name}: {_message(err)}. "
                "Lower deploy.lambda.reserved_concurrency (or set it to null), or ask AWS for a higher "
                "account concurrency quota"
            ) from err
        raise
    log.info("reserved concurrency of %s = %s", name, reserved)
    return True


def ensure_provisioned_concurrency(lam: Any, name: str, provisioned: int) -> bool:
    """Sets provisioned concurrency on the `live` alias (0 removes it); it bills while idle.

    Raises:
        DeployError: Lambda refused the number (the message names the setting).
    """
    current = provisioned_concurrency(lam, name)
    wanted = provisioned or None
    if current == wanted:
        return False
    if wanted is None:
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=ALIAS)
        return True
    try:
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier=ALIAS, ProvisionedConcurrentExecutions=provisioned
        )
    except ClientError as err:
        if err.response["Error"]["Code"] in ("InvalidParameterValueException", "LimitExceededException"):
            raise DeployError(
                f"Lambda refused provisioned concurrency {provisioned} on {name}:{ALIAS}: "
                f"{_message(err)}. Lower deploy.lambda.provisioned_concurrency (0 skips it)"
            ) from err
        raise
    log.info("provisioned concurrency of %s:%s = %s", name, ALIAS, provisioned)
    return True


def provisioned_concurrency(lam: Any, name: str) -> int | None:
    """The provisioned concurrency requested on the alias, or None."""
    try:
        config = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=ALIAS)
    except ClientError as err:
        if err.response["Error"]["Code"] in PC_NOT_FOUND:
            return None
        raise
    return config["RequestedProvisionedConcurrentExecutions"]


def ensure_url(lam: Any, name: str, auth: str | None) -> tuple[str | None, bool]:
    """Creates, updates or (auth None) removes the alias's function URL; returns it and whether it changed."""
    current = _url_config(lam, name)
    if auth is None:
        if current is None:
            return None, False
        delete_url(lam, name)
        return None, True
    if auth == "NONE":
        log.warning("the function URL of %s takes unsigned requests from anyone (deploy.lambda.url_auth=NONE)", name)
    if current is None:
        current = lam.create_function_url_config(FunctionName=name, Qualifier=ALIAS, AuthType=auth)
        changed = True
    elif current["AuthType"] != auth:
        current = lam.update_function_url_config(FunctionName=name, Qualifier=ALIAS, AuthType=auth)
        changed = True
    else:
        return current["FunctionUrl"], False
    if auth == "NONE":
        _allow_public_url(lam, name)
    else:
        _remove_permissions(lam, name)
    log.info("function URL of %s (%s): %s", name, auth, current["FunctionUrl"])
    return current["FunctionUrl"], changed


def delete_url(lam: Any, name: str) -> bool:
    """Removes the function URL and its public permissions; False when there was none."""
    _remove_permissions(lam, name)
    try:
        lam.delete_function_url_config(FunctionName=name, Qualifier=ALIAS)
    except ClientError as err:
        if err.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return True


def delete_alias(lam: Any, name: str) -> bool:
    """Removes provisioned concurrency and the `live` alias; False when the alias was gone."""
    if provisioned_concurrency(lam, name) is not None:
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=ALIAS)
    try:
        lam.delete_alias(FunctionName=name, Name=ALIAS)
    except ClientError as err:
        if err.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return True


def delete_function(lam: Any, name: str) -> bool:
    """Deletes the function with all its versions; False when there was none."""
    try:
        lam.delete_function(FunctionName=name)
    except ClientError as err:
        if err.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    log.info("deleted function %s", name)
    return True


def function_state(lam: Any, name: str) -> str:
    """The function's State (`Active`, `Pending`, ...) or `absent`, for `status`."""
    try:
        return lam.get_function(FunctionName=name)["Configuration"].get("State", "present")
    except ClientError as err:
        if err.response["Error"]["Code"] == "ResourceNotFoundException":
            return "absent"
        raise


def function_url(lam: Any, name: str) -> str | None:
    """The `live` alias's function URL, or None, for `status`."""
    config = _url_config(lam, name)
    return config["FunctionUrl"] if config else None


def _url_config(lam: Any, name: str) -> dict[str, Any] | None:
    try:
        return lam.get_function_url_config(FunctionName=name, Qualifier=ALIAS)
    except ClientError as err:
        if err.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def _allow_public_url(lam: Any, name: str) -> None:
    # An AuthType NONE URL needs both statements; the second is limited to calls through the URL.
    url_only, via_url = PUBLIC_URL_STATEMENTS
    lam.add_permission(
        FunctionName=name,
        Qualifier=ALIAS,
        StatementId=url_only,
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
    )
    lam.add_permission(
        FunctionName=name,
        Qualifier=ALIAS,
        StatementId=via_url,
        Action="lambda:InvokeFunction",
        Principal="*",
        InvokedViaFunctionUrl=True,
    )


def _remove_permissions(lam: Any, name: str) -> None:
    for statement in PUBLIC_URL_STATEMENTS:
        try:
            lam.remove_permission(FunctionName=name, Qualifier=ALIAS, StatementId=statement)
        except ClientError as err:
            if err.response["Error"]["Code"] != "ResourceNotFoundException":
                raise


def _message(err: ClientError) -> str:
    return err.response["Error"]["Message"].rstrip(".")


def _role_not_ready(err: ClientError) -> bool:
    error = err.response["Error"]
    return error["Code"] == "InvalidParameterValueException" and "cannot be assumed" in error["Message"]
