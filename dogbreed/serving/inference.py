"""SageMaker PyTorch inference entry point (`code/inference.py` in model.tar.gz).

The container imports this file with `code/` on sys.path, where the package step
has put the whole `dogbreed.serving` package (and `dogbreed/__init__.py`).
"""

from dogbreed.serving.handler import input_fn, model_fn, output_fn, predict_fn

__all__ = ["input_fn", "model_fn", "output_fn", "predict_fn"]
