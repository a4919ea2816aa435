"""Train the dog-breed classifier: `python train.py [overrides]`, `-m` to sweep, `--debug` for tracebacks."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dogbreed.cli import EXIT_USAGE, Progress, reported_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns the validation top-1 accuracy, the value a sweeper optimises."""
    # After Hydra has parsed the CLI: --help stays fast.
    from dogbreed.train.run import train
    from dogbreed.train.settings import run_settings

    Progress.job_started = True
    # Inside the task, because Hydra would print a project error as a stack trace and exit 1,
    # where an interrupted run must exit 128 + signal.
    with reported_errors():
        return train(run_settings(cfg))


def run() -> None:
    """The command line: SageMaker and torchrun adjustments to argv, then Hydra."""
    import os
    import sys

    from dogbreed.allocator import reexec_with_tuned_malloc
    from dogbreed.sagemaker.entry_point import hydra_args

    reexec_with_tuned_malloc()  # before torch allocates anything; see dogbreed/allocator.py
    with reported_errors():  # SageMaker hyperparameters, torchrun ranks, --debug: see dogbreed/sagemaker/entry_point.py
        sys.argv = [sys.argv[0], *hydra_args(sys.argv[1:], os.environ)]
    try:
        main()
    except SystemExit as stop:
        if stop.code == 1 and not Progress.job_started:
            raise SystemExit(EXIT_USAGE) from None
        raise


if __name__ == "__main__":
    run()
