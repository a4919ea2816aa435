"""Train the dog-breed classifier: `python train.py [overrides]`, `-m` to sweep."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from dogbreed.errors import DogbreedError

log = logging.getLogger("dogbreed")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns the validation top-1 accuracy, the value a sweeper optimises."""
    from dogbreed.training import train  # after Hydra has parsed the CLI: --help stays fast

    try:
        return train(cfg)
    except DogbreedError as err:
        # A message that says what to do, instead of a traceback wall.
        log.error("%s", err)
        # An interrupted run exits 128 + signal, as if the signal had ended it; other errors exit 1.
        raise SystemExit(getattr(err, "exit_code", 1)) from None


if __name__ == "__main__":
    import os
    import sys

    from dogbreed.allocator import reexec_with_tuned_malloc
    from dogbreed.train_args import hydra_args

    reexec_with_tuned_malloc()  # before torch allocates anything; see dogbreed/allocator.py
    try:  # SageMaker hyperparameters, torchrun ranks: see dogbreed/train_args.py
        sys.argv = [sys.argv[0], *hydra_args(sys.argv[1:], os.environ)]
    except DogbreedError as err:
        sys.exit(f"error: {err}")
    main()
