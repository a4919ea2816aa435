"""What `train.py` adjusts before Hydra parses the command line. Imports no torch (fast --help)."""

from __future__ import annotations

import os
import tempfile

from dogbreed import sagemaker_job
from dogbreed.entry import DEBUG_ENV

DEBUG_FLAG = "--debug"


def hydra_args(args: list[str], environ: dict[str, str] | os._Environ) -> list[str]:
    """The arguments Hydra should see, and the variables set for this process.

    On SageMaker, `--key value` hyperparameters become overrides and a multi-host job gets
    its RANK/WORLD_SIZE/MASTER_*. Ranks other than 0 get a private throwaway Hydra run dir:
    only rank 0 writes the run's artifacts, so only one run directory appears. `--debug`,
    which Hydra does not know, becomes DOGBREED_DEBUG=1 for `dogbreed.entry`, and
    HYDRA_FULL_ERROR=1 so that Hydra's own errors show their tracebacks too.
    """
    if sagemaker_job.running_on_sagemaker(environ):
        args = sagemaker_job.hydra_argv(args)
        environ.update(sagemaker_job.cluster_environment(environ))
    # After the SageMaker conversion, which reads `--debug fast` as the debug config group.
    if DEBUG_FLAG in args:
        args = [arg for arg in args if arg != DEBUG_FLAG]
        environ.update({DEBUG_ENV: "1", "HYDRA_FULL_ERROR": "1"})
    if int(environ.get("RANK", "0")) > 0:
        scratch = tempfile.mkdtemp(prefix=f"dogbreed-rank{environ['RANK']}-")
        args = [*args, f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]
    return args
