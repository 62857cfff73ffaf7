"""``squall deploy aws``: the CloudFormation stack that runs squall workers as AWS Lambda functions."""
