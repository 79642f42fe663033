"""Credentials inside an --address URL never appear in error messages or on the console."""

from __future__ import annotations

import pytest

from jobs.submit import SubmitError, client, redact


def test_redact_hides_user_password_and_secret_query_values():
    assert redact("https://alice:s3cret@ray.example:8265/?token=abc&x=1") == "https://***:***@ray.example:8265/?token=***&x=1"
    assert redact("http://tok3n@h:8265") == "http://***@h:8265"
    assert redact("http://127.0.0.1:8265") == "http://127.0.0.1:8265"
    text = "Failed to connect to http://alice:s3cret@h:1/api (password s3cret rejected)"
    assert redact("http://alice:s3cret@h:1", text) == "Failed to connect to http://***:***@h:1/api (password *** rejected)"


def test_unreachable_address_error_does_not_echo_credentials():
    address = "http://alice:s3cret@127.0.0.1:1/?auth_token=zz9top"
    with pytest.raises(SubmitError) as exc:
        client(address)
    msg = str(exc.value)
    assert msg.startswith("--address http://***:***@127.0.0.1:1/?auth_token=***: cannot reach the Ray dashboard")
    assert "s3cret" not in msg and "zz9top" not in msg and "alice" not in msg and "\n" not in msg
