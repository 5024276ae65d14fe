"""A database URL's password never appears in an error (issue 13)."""

from __future__ import annotations

import pytest

from rlm_graph.redact import redact_url_passwords
from rlm_graph.storage.persistence import PersistenceError, open_persistence

PASSWORD = "hunter2-very-secret"


def test_url_passwords_are_blanked() -> None:
    text = f"cannot use 'postgresql://me:{PASSWORD}@db.example:5432/rlm' (x://a:b@c)"
    assert redact_url_passwords(text) == (
        "cannot use 'postgresql://me:***@db.example:5432/rlm' (x://a:***@c)"
    )
    assert redact_url_passwords("http://host/path?q=1") == "http://host/path?q=1"
    assert redact_url_passwords("http://host:8080/to@me") == "http://host:8080/to@me"


def test_a_failing_database_error_hides_the_password() -> None:
    pytest.importorskip("langgraph.checkpoint.postgres")
    url = f"postgresql://me:{PASSWORD}@127.0.0.1:1/rlm?connect_timeout=2"
    with pytest.raises(PersistenceError) as caught, open_persistence(url):
        pass
    assert PASSWORD not in str(caught.value)
    assert "me:***@127.0.0.1" in str(caught.value)
