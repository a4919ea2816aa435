"""The Lambda function code: this folder is zipped as is (handler lambda_function.lambda_handler)."""
