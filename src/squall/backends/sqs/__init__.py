"""The SQS backend: each attempt one SQS message, consumed by ``squall worker`` processes or AWS Lambda
functions (see :mod:`.backend`); boto3 is imported only when a job, a worker or the handler runs."""
