"""SageMaker training: the launcher's settings and requests, the jobs command line, the entry point in the container.

`python -m dogbreed.sagemaker.jobs {list,logs,stop}` watches the jobs the launcher started.
"""
