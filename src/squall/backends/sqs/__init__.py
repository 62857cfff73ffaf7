"""The ``sqs`` backend: chunk messages on SQS, consumed by ``squall worker`` processes or AWS Lambda functions."""
