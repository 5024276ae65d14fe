"""Keeping the host's secrets out of what a model, the sandbox or a log line sees.

Imports nothing from rlm_graph: every layer may use it.
"""

from __future__ import annotations

import os
import re

# Environment variables whose values must never reach a model, the sandbox or a log line.
_SECRET_NAMES = re.compile(r"(_API_KEY|_TOKEN|_SECRET|_PASSWORD)$|^(API_KEY|SECRET_KEY)$")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a key, token or password."""
    return bool(_SECRET_NAMES.search(name.upper()))


def redact_secrets(text: str) -> str:
    """``text`` with key-like environment values and passwords in URLs blanked out.

    Provider errors quote what they were sent (an HTTP 401 may echo the key), and such
    errors are shown to the model and, through its code, could be sent anywhere; a
    ``--base-url`` or ``--checkpoint`` URL with a password in it is quoted by the errors
    of connecting to it.
    """
    for name, value in os.environ.items():
        if len(value) >= 8 and is_secret_name(name) and value in text:
            text = text.replace(value, f"[{name} redacted]")
    return redact_url_passwords(text)


# The password ends at "@"; it cannot hold "/" (that would end the URL's authority), so
# "http://host:8080/path@x" keeps its port.
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/\s:@]*:)([^@\s/]+)(@)")


def redact_url_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` blanked out.

    A database URL given on the command line (``--checkpoint postgresql://...``) is
    quoted in its error messages, which go to a terminal, a log or a CI page.
    """
    return _URL_PASSWORD.sub(r"\1***\3", text)
