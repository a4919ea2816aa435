"""`hydra/launcher=sagemaker`: every job of `python train.py -m ...` runs as a SageMaker training job."""
