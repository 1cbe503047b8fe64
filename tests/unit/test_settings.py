"""Settings load once from SHIPWRECK_* variables, with errors that name the variable."""

from __future__ import annotations

import msgspec
import pytest

from shipwreck_runtime import SettingsError, load_settings
from shipwreck_runtime.secrets import redact_url


class Example(msgspec.Struct, frozen=True, kw_only=True):
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    api_port: int = 8080
    watch: bool = True
    database_url: str | None = None


def test_unset_variables_keep_the_defaults() -> None:
    assert load_settings(Example, {}) == Example()


def test_values_are_converted_from_text() -> None:
    settings = load_settings(
        Example,
        {
            "SHIPWRECK_API_PORT": "9090",
            "SHIPWRECK_WATCH": "false",
            "SHIPWRECK_DATABASE_URL": "postgresql://db/x",
            "UNRELATED": "1",
        },
    )
    assert settings == Example(api_port=9090, watch=False, database_url="postgresql://db/x")


def test_a_bad_value_names_the_variable_and_the_expected_type() -> None:
    with pytest.raises(SettingsError, match=r"SHIPWRECK_API_PORT='eighty' is not valid.*int"):
        load_settings(Example, {"SHIPWRECK_API_PORT": "eighty"})


def test_passwords_are_redacted_from_urls() -> None:
    assert redact_url("amqp://guest:s3cret@mq:5672/") == "amqp://guest:***@mq:5672/"
    assert redact_url("postgresql://db/x") == "postgresql://db/x"
