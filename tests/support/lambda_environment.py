"""One simulated Lambda execution environment: a long-lived process that imports the handler once and runs it on
each event it reads (one JSON line on stdin), answering each with the handler's result (one JSON line on stdout).

It plays what the Lambda runtime does in one environment: the module and its
globals survive between invocations (warm), and a fresh process is a cold
start. Run as ``python -m support.lambda_environment NAME``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    """The attributes of the Lambda context object the handler may read."""

    log_stream_name: str
    function_name: str = "squall-preds"
    aws_request_id: str = ""


def main(name: str) -> int:
    from squall.backends.sqs.lambda_handler import handler

    for number, line in enumerate(sys.stdin):
        answer = handler(json.loads(line), Context(name, aws_request_id=f"{name}-{number}"))
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
