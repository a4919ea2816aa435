"""`train.py`'s argv before Hydra parses it: SageMaker hyperparameters, torchrun ranks, `--debug`.

SageMaker passes hyperparameters as `--key value` arguments and describes the cluster in
SM_* variables. `hydra_argv` turns the arguments into Hydra overrides (the course's names
are aliases; dotted names pass through); `cluster_environment` turns SM_HOSTS /
SM_CURRENT_HOST into the variables torch.distributed reads, one process per host. Data,
model and output directories already follow SM_CHANNEL_TRAINING, SM_MODEL_DIR and
SM_OUTPUT_DATA_DIR through the config's `oc.env` defaults. Imports no torch.
"""

from __future__ import annotations

import json
import os
import tempfile

from dogbreed.cli import DEBUG_ENV, EXIT_USAGE
from dogbreed.errors import DogbreedError

ALIASES = {
    "learning_rate": "optim.lr",
    "lr": "optim.lr",
    "batch_size": "data.batch_size",
    "epochs": "trainer.epochs",
    "weight_decay": "optim.weight_decay",
    "seed": "trainer.seed",
    "image_size": "data.image_size",
}
# Top-level config sections a dotted hyperparameter may address.
SECTIONS = ("data", "model", "optim", "sched", "trainer", "storage", "paths", "experiment", "debug")
RENDEZVOUS_PORT = "29500"
DEBUG_FLAG = "--debug"


class HyperparameterError(DogbreedError):
    """A SageMaker hyperparameter with no meaning here: bad usage, so train.py exits 2 like argparse."""

    exit_code = EXIT_USAGE


def running_on_sagemaker(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    return "SM_MODEL_DIR" in environ or "SM_TRAINING_ENV" in environ


def hydra_argv(args: list[str]) -> list[str]:
    """`--learning_rate 0.001 --model.arch resnet18` -> `optim.lr=0.001 model.arch=resnet18`.

    Arguments already in Hydra's `key=value` form are kept as they are.
    """
    overrides = []
    position = 0
    while position < len(args):
        arg = args[position]
        position += 1
        if not arg.startswith("--"):
            overrides.append(arg)
            continue
        name, has_value, value = arg[2:].partition("=")
        if not has_value:
            if position >= len(args):
                raise HyperparameterError(f"hyperparameter --{name} has no value")
            value = args[position]
            position += 1
        overrides.append(f"{hydra_key(name)}={value}")
    return overrides


def hydra_key(name: str) -> str:
    if name in ALIASES:
        return ALIASES[name]
    group = name.split(".")[0]
    if group in SECTIONS:
        # experiment/debug/storage... without a dot select a config group option.
        return name
    valid = ", ".join(f"--{alias}" for alias in ALIASES)
    raise HyperparameterError(
        f"unknown hyperparameter --{name}. Valid: {valid}, or any dotted config key "
        f"(--{SECTIONS[0]}.batch_size, --model.arch, ...) under {', '.join(SECTIONS)}; see python train.py --help"
    )


def cluster_environment(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """RANK/WORLD_SIZE/MASTER_* for a multi-host job not started by torchrun; {} otherwise."""
    if "WORLD_SIZE" in environ or "SM_HOSTS" not in environ:
        return {}
    hosts = sorted(json.loads(environ["SM_HOSTS"]))
    if len(hosts) < 2:
        return {}
    current = environ["SM_CURRENT_HOST"]
    return {
        "MASTER_ADDR": hosts[0],
        "MASTER_PORT": environ.get("MASTER_PORT", RENDEZVOUS_PORT),
        "WORLD_SIZE": str(len(hosts)),
        "RANK": str(hosts.index(current)),
        "LOCAL_RANK": "0",
    }


def hydra_args(args: list[str], environ: dict[str, str] | os._Environ) -> list[str]:
    """The arguments Hydra should see, and the variables set for this process.

    On SageMaker, `--key value` hyperparameters become overrides and a multi-host job gets
    its RANK/WORLD_SIZE/MASTER_*. Ranks other than 0 get a private throwaway Hydra run dir:
    only rank 0 writes the run's artifacts, so only one run directory appears. `--debug`,
    which Hydra does not know, becomes DOGBREED_DEBUG=1 for `dogbreed.cli`, and
    HYDRA_FULL_ERROR=1 so that Hydra's own errors show their tracebacks too.
    """
    if running_on_sagemaker(environ):
        args = hydra_argv(args)
        environ.update(cluster_environment(environ))
    # After the SageMaker conversion, which reads `--debug fast` as the debug config group.
    if DEBUG_FLAG in args:
        args = [arg for arg in args if arg != DEBUG_FLAG]
        environ.update({DEBUG_ENV: "1", "HYDRA_FULL_ERROR": "1"})
    if int(environ.get("RANK", "0")) > 0:
        scratch = tempfile.mkdtemp(prefix=f"dogbreed-rank{environ['RANK']}-")
        args = [*args, f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]
    return args
