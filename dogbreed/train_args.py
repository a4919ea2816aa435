"""What `train.py` adjusts before Hydra parses the command line. Imports no torch (fast --help)."""

from __future__ import annotations

import os
import tempfile

from dogbreed import sagemaker_job


def hydra_args(args: list[str], environ: dict[str, str] | os._Environ) -> list[str]:
    """The arguments Hydra should see, and the cluster variables set for this process.

    On SageMaker, `--key value` hyperparameters become overrides and a multi-host job gets
    its RANK/WORLD_SIZE/MASTER_*. Ranks other than 0 get a private throwaway Hydra run dir:
    only rank 0 writes the run's artifacts, so only one run directory appears.
    """
    if sagemaker_job.running_on_sagemaker(environ):
        args = sagemaker_job.hydra_argv(args)
        environ.update(sagemaker_job.cluster_environment(environ))
    if int(environ.get("RANK", "0")) > 0:
        scratch = tempfile.mkdtemp(prefix=f"dogbreed-rank{environ['RANK']}-")
        args = [*args, f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]
    return args
