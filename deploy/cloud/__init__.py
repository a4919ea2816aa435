"""AWS side of deploy: SageMaker model/endpoint, autoscaling, the Lambda front door, state and teardown."""
