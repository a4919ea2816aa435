"""SageMaker PyTorch inference entry point (`code/inference.py` in model.tar.gz).

The container imports this file with `code/` on sys.path, where the package step
has put `deploy/container/` and the `dogbreed` modules it needs.
"""

from deploy.container.handler import input_fn, model_fn, output_fn, predict_fn

__all__ = ["input_fn", "model_fn", "output_fn", "predict_fn"]
