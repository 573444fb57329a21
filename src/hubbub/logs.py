"""Log lines: ``--log-format json`` writes one JSON object per line; credentials in
URLs never reach a line, in either format."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from urllib.parse import unquote_plus

# Query parameters that carry credentials, wherever a URL appears in a line (uvicorn's
# "WebSocket /v1/ws?token=… [accepted]" among others), however their names are encoded.
SECRET_PARAMETERS = frozenset(
    {
        *("token", "access_token", "guest", "api_key", "apikey", "key", "password"),
        *("secret", "session", "sig", "signature", "code", "auth"),
    }
)
PARAMETER = re.compile(r"(?<=[?&;])([^=&\s\"'#?;]+)=([^&\s\"'#;]*)")


def _redact(match: re.Match[str]) -> str:
    name = match.group(1)
    if unquote_plus(name).lower() in SECRET_PARAMETERS:
        return f"{name}=***"
    return match.group(0)


def redact(line: str) -> str:
    """``line`` with the value of every credential parameter of a URL as ``***``."""
    return PARAMETER.sub(_redact, line) if "=" in line else line


class RedactCredentials(logging.Filter):
    """Rewrites a record's message with every credential in a URL as ``name=***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# Context a log call may pass with ``extra=``; copied into the JSON object when present.
CONTEXT_FIELDS = ("conn", "user", "room")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, plus ``conn``/``user``/``room`` when
    given and ``exc_info`` when there is one, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)
