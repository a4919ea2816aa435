"""What the SageMaker inference containers run, and what training shares with it.

`python -m deploy package` ships this package whole, as `code/dogbreed/serving/` in
model.tar.gz. The Ray Serve container runs `ray_app` (named by the tarball's `config.yaml`);
the TorchServe container runs `inference.py`, also copied to `code/inference.py`. The images
have torch, torchvision and pillow but not this project, so the imports here are closed: the
standard library, torch, torchvision, PIL, this package and the bare `dogbreed` package
(which only defines `__version__`); `ray_app` also imports Ray and its starlette, which only
the Ray Serve image has, and `errors.py` tries the optional `sagemaker_inference` of the
TorchServe image. Everything here must run on both images' versions: PyTorch 2.10,
torchvision 0.25, Python 3.13 (Ray Serve) and PyTorch 2.6, torchvision 0.21, Python 3.12
(TorchServe; dogbreed/aws/support.json).

Training builds its network (`architecture`) and evaluates with the preprocessing
(`preprocess`) defined here, so the endpoint runs what evaluation measured.
"""
