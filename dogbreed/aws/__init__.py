"""The AWS control plane shared by `deploy`, `ami` and the SageMaker launcher: IAM roles under the project's
permissions boundary, the code bundle, the Deep Learning Container image table."""
