"""S3 as the project's object store: addresses and clients, verified transfers, mirrored prefixes, a run's uploads.

`python -m dogbreed.storage {push,put,sync}` is its command line (`dogbreed/storage/__main__.py`).
"""
