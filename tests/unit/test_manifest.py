"""Reading Shipwreck.toml: real files parse, every malformed one is explained, nothing raises."""

from __future__ import annotations

import pytest

from shipwreck_contracts.manifest import (
    MANIFEST_FILENAMES,
    Language,
    Manifest,
    ManifestApp,
    ManifestConfig,
    ManifestError,
    describe_errors,
    find_manifest_filename,
    parse_manifest,
)

# DESIGN.md section 6, byte for byte: real files in the wild look like this.
DESIGN_EXAMPLE = b"""\
[app]
name="scapegoat"
version="1.0.0"
author="Ethan Shry"
endpoint="https://github.com/ethanshry/scapegoat"

[config]
lang="python3"
test=""
run="python3 ./src/main.py"
port=9000

[env-vars]
test-var="test-var content"
"""

APP = '[app]\nname = "hello"\n'
CONFIG = '[config]\nlang = "python3"\nrun = "python3 main.py"\nport = 8000\n'


def _manifest(*, app: str = APP, config: str = CONFIG, extra: str = "") -> bytes:
    return f"{app}\n{config}\n{extra}".encode()


def _config(**fields: str | None) -> bytes:
    """A valid manifest with [config] keys replaced (TOML source text) or removed (None)."""
    merged = {"lang": '"python3"', "run": '"python3 main.py"', "port": "8000", **fields}
    lines = "".join(f"{key} = {value}\n" for key, value in merged.items() if value is not None)
    return _manifest(config="[config]\n" + lines)


def _errors(result: Manifest | list[ManifestError]) -> list[ManifestError]:
    assert isinstance(result, list), f"expected errors, got {result!r}"
    assert result, "an error result must not be empty"
    assert all(isinstance(error, ManifestError) for error in result)
    return result


def _parsed(result: Manifest | list[ManifestError]) -> Manifest:
    assert isinstance(result, Manifest), describe_errors(result)
    return result


# --- files that must be accepted ----------------------------------------------------------


def test_the_design_example_parses() -> None:
    assert parse_manifest(DESIGN_EXAMPLE) == Manifest(
        app=ManifestApp(
            name="scapegoat",
            version="1.0.0",
            author="Ethan Shry",
            endpoint="https://github.com/ethanshry/scapegoat",
        ),
        config=ManifestConfig(
            lang=Language.PYTHON3, run="python3 ./src/main.py", port=9000, test=None
        ),
        env={"test-var": "test-var content"},
        warnings=[],
        file="Shipwreck.toml",
    )


def test_a_node_manifest_with_port_test_run_and_routing_parses() -> None:
    data = b"""\
[app]
name = "todo-api"

[config]
lang = "node"
run = "node server.js"
test = "npm test"
port = 3000
domain = "todo.example.com"
healthcheck = "/healthz"

[env]
NODE_ENV = "production"
"""
    assert parse_manifest(data) == Manifest(
        app=ManifestApp(name="todo-api"),
        config=ManifestConfig(
            lang=Language.NODE,
            run="node server.js",
            port=3000,
            domain="todo.example.com",
            test="npm test",
            healthcheck="/healthz",
        ),
        env={"NODE_ENV": "production"},
    )


def test_a_worker_without_port_parses() -> None:
    data = _manifest(config='[config]\nlang = "python"\nrun = "python worker.py"\n')
    assert _parsed(parse_manifest(data)).config.port is None


def test_an_empty_test_means_no_test() -> None:
    assert _parsed(parse_manifest(_config(test='"   "'))).config.test is None


def test_empty_domain_and_healthcheck_mean_none() -> None:
    config = _parsed(parse_manifest(_config(domain='""', healthcheck='""'))).config
    assert (config.domain, config.healthcheck) == (None, None)


def test_a_domain_is_lower_cased() -> None:
    config = _parsed(parse_manifest(_config(domain='"Shop.Example.COM"'))).config
    assert config.domain == "shop.example.com"


def test_env_is_empty_without_an_env_table() -> None:
    assert _parsed(parse_manifest(_manifest())).env == {}


def test_a_byte_order_mark_is_accepted() -> None:
    assert _parsed(parse_manifest(b"\xef\xbb\xbf" + _manifest())).app.name == "hello"


def test_unknown_keys_become_warnings() -> None:
    data = _manifest(
        app=APP + 'licence = "MIT"\n', config=CONFIG + "foo = 1\n", extra='[deploy]\nx = "y"\n'
    )
    assert _parsed(parse_manifest(data)).warnings == [
        "Shipwreck.toml: unknown key 'deploy' ignored",
        "Shipwreck.toml: unknown key 'app.licence' ignored",
        "Shipwreck.toml: unknown key 'config.foo' ignored",
    ]


def test_warnings_name_the_file_read() -> None:
    data = _config(foo="1")
    assert _parsed(parse_manifest(data, "Config.toml")).warnings == [
        "Config.toml: unknown key 'config.foo' ignored"
    ]


def test_the_manifest_remembers_its_file_name() -> None:
    assert _parsed(parse_manifest(_manifest(), "shipwreck.toml")).file == "shipwreck.toml"


# --- malformed files: each is a list of errors naming the field ---------------------------

TEN_MEGABYTES = b"# padding\n" * 1024 * 1024

MALFORMED: list[tuple[str, bytes, str, str]] = [
    # (id, data, field, fragment of the error message)
    ("empty file", b"", "app", "is missing"),
    ("no app table", CONFIG.encode(), "app", "is missing"),
    ("no config table", APP.encode(), "config", "is missing"),
    ("app is a string", _manifest(app='app = "hello"\n'), "app", "is a string, not a table"),
    ("config is an array", b"config = [1]\n" + APP.encode(), "config", "is an array, not a"),
    ("name missing", _manifest(app='[app]\nversion = "1"\n'), "app.name", "is missing"),
    ("name is an integer", _manifest(app="[app]\nname = 7\n"), "app.name", "is an integer, not"),
    ("name is empty", _manifest(app='[app]\nname = ""\n'), "app.name", "is empty"),
    ("name upper-case", _manifest(app='[app]\nname = "Hello"\n'), "app.name", "upper-case"),
    ("name underscore", _manifest(app='[app]\nname = "my_app"\n'), "app.name", 'has "_"'),
    ("name leading hyphen", _manifest(app='[app]\nname = "-app"\n'), "app.name", "leading '-'"),
    ("name trailing hyphen", _manifest(app='[app]\nname = "app-"\n'), "app.name", "trailing"),
    ("name too long", _manifest(app=f'[app]\nname = "{"a" * 64}"\n'), "app.name", "64 characters"),
    ("name not ascii", _manifest(app='[app]\nname = "café"\n'), "app.name", 'has "é"'),
    ("version not a string", _manifest(app=APP + "version = 1.0\n"), "app.version", "is a float"),
    ("lang missing", _manifest(config='[config]\nrun = "x"\n'), "config.lang", "is missing"),
    ("lang unknown", _config(lang='"ruby"'), "config.lang", "python, python3"),
    ("lang is an array", _config(lang='["python"]'), "config.lang", "is an array, not a"),
    ("run missing", _manifest(config='[config]\nlang = "node"\n'), "config.run", "is missing"),
    ("run empty", _config(run='""'), "config.run", "is empty"),
    ("run blank", _config(run='"  "'), "config.run", "is empty"),
    ("run is an array", _config(run='["node", "x.js"]'), "config.run", "is an array"),
    ("port 0", _config(port="0"), "config.port", "0 is out of range"),
    ("port 70000", _config(port="70000"), "config.port", "70000 is out of range"),
    ("port negative", _config(port="-1"), "config.port", "-1 is out of range"),
    ("port a string", _config(port='"8080"'), "config.port", "is a string, not"),
    ("port a boolean", _config(port="true"), "config.port", "is a boolean, not"),
    ("port a float", _config(port="8080.0"), "config.port", "is a float, not"),
    ("domain scheme", _config(domain='"https://a.com"'), "config.domain", "a URL scheme"),
    ("domain port", _config(domain='"a.com:443"'), "config.domain", "includes a port"),
    ("domain path", _config(domain='"a.com/app"'), "config.domain", "includes a path"),
    ("domain underscore", _config(domain='"my_app.a.com"'), "config.domain", 'has "_"'),
    ("domain no dot", _config(domain='"localhost"'), "config.domain", "has no dot"),
    ("domain empty label", _config(domain='"a..com"'), "config.domain", "an empty label"),
    ("domain an ip", _config(domain='"10.0.0.1"'), "config.domain", "is an IP address"),
    ("domain wildcard", _config(domain='"*.a.com"'), "config.domain", 'has "*"'),
    ("domain no port", _config(domain='"a.com"', port=None), "config.domain", "port is not"),
    ("health no slash", _config(healthcheck='"health"'), "config.healthcheck", 'start with "/"'),
    ("health space", _config(healthcheck='"/he alth"'), "config.healthcheck", "spaces"),
    ("health no port", _config(healthcheck='"/h"', port=None), "config.healthcheck", "port is not"),
    ("health an int", _config(healthcheck="200"), "config.healthcheck", "is an integer"),
    ("test a boolean", _config(test="false"), "config.test", "is a boolean, not a string"),
    ("env-vars a string", b'env-vars = "A=1"\n' + _manifest(), "env-vars", "not a table"),
    ("env an array", b'env = ["A=1"]\n' + _manifest(), "env", "is an array, not a table"),
    ("env value an int", _manifest(extra="[env-vars]\nPORT = 1\n"), "env-vars.PORT", "quote it"),
    ("env value a table", _manifest(extra='[env]\na.b = "x"\n'), "env.a", "is a table, not"),
    ("env value a bool", _manifest(extra="[env]\nDEBUG = true\n"), "env.DEBUG", "is a boolean"),
    ("env name with =", _manifest(extra='[env]\n"A=B" = "x"\n'), 'env."A=B"', "'='"),
    ("env name empty", _manifest(extra='[env]\n"" = "x"\n'), 'env.""', "empty name"),
    ("env name control", _manifest(extra='[env]\n"A\\u0007" = "x"\n'), 'env."A\\u0007"', "control"),
    ("env value nul", _manifest(extra='[env]\nA = "x\\u0000y"\n'), "env.A", "NUL character"),
    ("env and env-vars", _manifest(extra='[env]\nA = "1"\n[env-vars]\nB = "2"\n'), "env", "twice"),
    ("not toml", b'[app\nname = "x"\n', "", "line 1"),
    ("not toml later line", b'[app]\nname = "x"\nrun = \n', "", "line 3"),
    ("binary garbage", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "", "binary"),
    ("invalid utf-8", b'[app]\nname = "caf\xe9"\n', "", "not valid UTF-8 (byte 0xe9"),
    ("ten megabytes", TEN_MEGABYTES, "", "10485760 bytes, larger than the limit"),
    ("oversized garbage", b"\xff" * 70_000, "", "70000 bytes, larger than the limit"),
    ("deep arrays", b"a=" + b"[" * 60_000, "", "too deeply"),
    ("deep inline tables", b"a=" + b"{b=" * 20_000, "", "too deeply"),
    ("huge integer", b"port = " + b"9" * 5000, "", "not valid TOML"),
]


@pytest.mark.parametrize(
    ("data", "field", "fragment"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_a_malformed_manifest_is_explained(data: bytes, field: str, fragment: str) -> None:
    errors = _errors(parse_manifest(data))
    matching = [error for error in errors if error.field == field]
    assert matching, f"no error for {field!r} in: {describe_errors(errors)}"
    assert any(fragment in error.message for error in matching), describe_errors(matching)


def test_an_error_reads_as_file_field_problem_and_what_is_allowed() -> None:
    [error] = _errors(parse_manifest(_config(port="70000")))
    assert str(error) == (
        "Shipwreck.toml: config.port: 70000 is out of range; allowed: an integer from 1 to 65535"
    )


def test_a_whole_file_error_has_no_field_in_its_message() -> None:
    [error] = _errors(parse_manifest(b"\xff"))
    assert error.message.startswith("Shipwreck.toml: is not valid UTF-8")


def test_errors_name_the_file_read() -> None:
    errors = _errors(parse_manifest(b"", "Config.toml"))
    assert all(error.message.startswith("Config.toml: ") for error in errors)


def test_every_error_is_reported_at_once() -> None:
    data = b'[app]\nname = "Bad_Name"\n[config]\nlang = "cobol"\nrun = ""\nport = 0\n'
    errors = _errors(parse_manifest(data))
    assert [error.field for error in errors] == [
        "app.name",
        "config.lang",
        "config.run",
        "config.port",
    ]


def test_an_invalid_app_name_is_not_rewritten_but_a_fix_is_suggested() -> None:
    [error] = _errors(parse_manifest(_manifest(app='[app]\nname = "My_App"\n')))
    assert error.problem == (
        '"My_App" is not a valid app name: it has upper-case letters, "_" (try "my-app")'
    )


def test_an_unknown_lang_lists_the_allowed_languages() -> None:
    [error] = _errors(parse_manifest(_config(lang='"ruby"')))
    assert error.allowed == "one of node, python, python3"


def test_env_errors_never_show_the_value() -> None:
    data = _manifest(extra='[env-vars]\nTOKEN = 98765432\nSECRET = "hunter2\\u0000"\n')
    text = describe_errors(_errors(parse_manifest(data)))
    assert "98765432" not in text
    assert "hunter2" not in text


def test_describe_errors_puts_one_error_per_line() -> None:
    errors = _errors(parse_manifest(b""))
    assert describe_errors(errors).splitlines() == [error.message for error in errors]


# --- finding the file ---------------------------------------------------------------------


def test_manifest_file_names_are_looked_up_in_design_order() -> None:
    assert MANIFEST_FILENAMES == ("Shipwreck.toml", "shipwreck.toml", "Config.toml")


def test_find_manifest_filename_prefers_shipwreck_toml() -> None:
    present = {"Config.toml", "shipwreck.toml", "Shipwreck.toml", "README.md"}
    assert find_manifest_filename(present) == "Shipwreck.toml"


def test_find_manifest_filename_falls_back_to_config_toml() -> None:
    assert find_manifest_filename({"Config.toml", "main.py"}) == "Config.toml"


def test_find_manifest_filename_is_none_without_a_manifest() -> None:
    assert find_manifest_filename({"main.py"}) is None


def test_the_size_limit_is_checked_before_decoding_or_parsing() -> None:
    [error] = _errors(parse_manifest(b"\xff[[[" * 20_000))
    assert error.problem == "is 80000 bytes, larger than the limit"
