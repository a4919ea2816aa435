"""Training: `train(settings)` and the pieces it runs (epoch loop, checkpoints, resume, feature cache, reports).

`dogbreed.train.settings` turns the Hydra config into `RunSettings` once; nothing below it reads the config.
"""
