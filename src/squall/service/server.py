"""Run the service with uvicorn: ``squall serve`` calls :func:`serve`."""

from __future__ import annotations

import logging
import re

from squall.service.config import ServeConfig


def serve(config: ServeConfig) -> None:
    """Listen on ``config.host:config.port`` until interrupted.

    Raises :class:`~squall.errors.UsageError` before listening for a non-loopback host without a token, a bad
    trigger rule, or a state folder another ``squall serve`` is using."""
    from squall.triggers.service import check_rules

    config.check_bind()
    check_rules(config.trigger_rules())  # a bad rule stops serve here, with its message, not in uvicorn
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - the serve extra is missing
        from squall.errors import UsageError

        raise UsageError(f"squall serve needs FastAPI and uvicorn ({exc}): pip install 'squall[serve]'") from None
    from squall.service.app import create_app

    app = create_app(config)
    # Here, not in the app's startup: uvicorn reports an error there with a traceback and exit code 3.
    app.state.scheduler.claim_state_dir(f"http://{config.host}:{config.port}")
    logging.getLogger("uvicorn.access").addFilter(TokenRedaction())
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")


class TokenRedaction(logging.Filter):
    """Keeps the dashboard's ``?token=`` out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN.sub(r"\1token=…", a) if isinstance(a, str) else a for a in record.args)
        return True


_TOKEN = re.compile(r"([?&])token=[^&\s]*")
