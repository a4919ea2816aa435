"""What the SageMaker PyTorch inference container runs, and what training shares with it.

`python -m deploy package` ships this package whole, as `code/dogbreed/serving/` in
model.tar.gz, with `inference.py` also copied to `code/inference.py`, the container's
entry point. The container has torch, torchvision and pillow but not this project, so
the imports here are closed: the standard library, torch, torchvision, PIL, this package
and the bare `dogbreed` package (which only defines `__version__`); `errors.py` also
tries the optional `sagemaker_inference`, present only in the container. Everything here
must run on the container's versions (PyTorch 2.6, torchvision 0.21, Python 3.12).

Training builds its network (`architecture`) and evaluates with the preprocessing
(`preprocess`) defined here, so the endpoint runs what evaluation measured.
"""
