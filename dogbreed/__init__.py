"""dogbreed: train a dog-breed classifier on EC2 and serve it from SageMaker."""

__version__ = "0.2.0"
