"""Reading ``Shipwreck.toml``: the manifest at the root of every deployed repository.

``parse_manifest`` turns the file's bytes into a `Manifest`, or into a list of every
`ManifestError` found; it never raises, because its input is whatever a user pushed. Each
error names the file, the field, what was wrong and what is allowed (DESIGN.md section 6).
Unknown keys are not errors: they become warnings on the manifest, and so on the deployment.

Decisions worth knowing:

- ``app.name`` is not rewritten: ``My_App`` is an error that says what is allowed (and
  suggests ``my-app``), because a silently different name would be a different app.
- ``config.domain`` is lower-cased: host names are case-insensitive, so nothing changes.
- An empty ``config.test``, ``config.domain`` or ``config.healthcheck`` means "none": real
  manifests write ``test=""`` for "no tests".
- Environment variable names may contain ``-`` (``test-var`` in real manifests; Docker passes
  them through); only empty names and names with ``=`` or control characters are refused.
  Values must be strings: guessing how to print ``1.0`` or ``true`` would surprise someone.
- Environment values are never echoed in errors: they are often secrets.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import tomllib
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

import msgspec

from .values import APP_NAME_RE, APP_NAME_RULE, AppName

MANIFEST_FILENAMES: Final = ("Shipwreck.toml", "shipwreck.toml", "Config.toml")
"""File names looked up in the repository root, in this order."""

MAX_MANIFEST_BYTES: Final = 64 * 1024
"""Larger files are refused before parsing: a manifest is a few hundred bytes."""

PORT_RANGE: Final = range(1, 65536)
MAX_DOMAIN_LENGTH: Final = 253
MAX_PATH_LENGTH: Final = 2048

_LABEL_RE: Final = APP_NAME_RE
_BARE_KEY_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_SHOWN_CHARS: Final = 60


class Language(enum.StrEnum):
    """A language template for ``config.lang``; adding a member here makes it valid."""

    PYTHON = "python"
    PYTHON3 = "python3"
    NODE = "node"


class ManifestApp(msgspec.Struct, frozen=True, kw_only=True):
    """The ``[app]`` table: the app's name and optional metadata."""

    name: AppName
    version: str | None = None
    author: str | None = None
    endpoint: str | None = None


class ManifestConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The ``[config]`` table: how to build, test, run and route the app."""

    lang: Language
    run: str
    port: int | None = None
    domain: str | None = None
    test: str | None = None
    healthcheck: str | None = None


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """A valid manifest, plus the warnings (unknown keys) found while reading it."""

    app: ManifestApp
    config: ManifestConfig
    env: dict[str, str] = {}
    warnings: list[str] = []
    file: str = MANIFEST_FILENAMES[0]


class ManifestError(msgspec.Struct, frozen=True, kw_only=True):
    """One problem in a manifest: where it is, what is wrong, what is allowed.

    ``field`` is a dotted path such as ``config.port``, or ``""`` when the problem is the
    whole file (not UTF-8, not TOML, too large).
    """

    file: str
    field: str
    problem: str
    allowed: str = ""

    @property
    def message(self) -> str:
        """The error as one line, e.g. ``Shipwreck.toml: config.port: 0 is out of range; ...``."""
        where = f"{self.file}: {self.field}: " if self.field else f"{self.file}: "
        tail = f"; allowed: {self.allowed}" if self.allowed else ""
        return f"{where}{self.problem}{tail}"

    def __str__(self) -> str:
        return self.message


def parse_manifest(
    data: bytes, filename: str = MANIFEST_FILENAMES[0]
) -> Manifest | list[ManifestError]:
    """Read a manifest from the bytes of ``filename``; never raises.

    Returns the `Manifest`, or every error found (a non-empty list).
    """
    document = _load_toml(data, filename)
    if isinstance(document, ManifestError):
        return [document]
    return _Reader(filename).read(document)


def find_manifest_filename(present: Collection[str]) -> str | None:
    """Return the manifest file to read among the repository root's file names, if any."""
    return next((name for name in MANIFEST_FILENAMES if name in present), None)


def describe_errors(errors: Iterable[ManifestError]) -> str:
    """Join errors into one human-readable text, one error per line (for a deployment)."""
    return "\n".join(error.message for error in errors)


# --- loading --------------------------------------------------------------------------------


def _load_toml(data: bytes, filename: str) -> dict[str, Any] | ManifestError:
    def fail(problem: str, allowed: str) -> ManifestError:
        return ManifestError(file=filename, field="", problem=problem, allowed=allowed)

    # Checked before decoding so that a huge file costs nothing but its length.
    if len(data) > MAX_MANIFEST_BYTES:
        return fail(
            f"is {len(data)} bytes, larger than the limit",
            f"at most {MAX_MANIFEST_BYTES} bytes ({MAX_MANIFEST_BYTES // 1024} KiB)",
        )
    if b"\x00" in data:
        return fail("contains NUL bytes; it looks like a binary file", "UTF-8 encoded TOML text")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        return fail(
            f"is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            "UTF-8 encoded TOML text",
        )
    # Editors on Windows like to start files with a byte order mark; TOML does not allow it.
    text = text.removeprefix("\ufeff")
    try:
        document = tomllib.loads(text)
    except RecursionError:
        # tomllib recurses once per nesting level; "a=[[[[..." exhausts the stack long before
        # the size limit. The interpreter has unwound by the time we get here.
        return fail(
            "nests arrays or tables too deeply to be read",
            "a shallow TOML document: tables of strings and numbers",
        )
    except ValueError as exc:
        # TOMLDecodeError is a ValueError; a plain one comes from e.g. a 5000-digit integer.
        reason = str(exc)
        return fail(
            f"is not valid TOML: {reason[:1].lower()}{reason[1:]}",
            'TOML (https://toml.io), e.g. [app] then name = "my-app" on the next line',
        )
    return document


# --- validation -----------------------------------------------------------------------------


class _Reader:
    """Walks a parsed document once, collecting every error and warning."""

    def __init__(self, filename: str) -> None:
        self.file = filename
        self.errors: list[ManifestError] = []
        self.warnings: list[str] = []

    def read(self, document: dict[str, Any]) -> Manifest | list[ManifestError]:
        self._warn_unknown(document, "", {"app", "config", "env-vars", "env"})
        app = self._read_app(document)
        config = self._read_config(document)
        env = self._read_env(document)
        if self.errors or app is None or config is None:
            return self.errors
        return Manifest(app=app, config=config, env=env, warnings=self.warnings, file=self.file)

    # -- sections --

    def _read_app(self, document: dict[str, Any]) -> ManifestApp | None:
        table = self._table(document, "app", 'an [app] table with name = "my-app"')
        if table is None:
            return None
        self._warn_unknown(table, "app", {"name", "version", "author", "endpoint"})
        name = self._app_name(table)
        version = self._string(table, "app.version", required=False)
        author = self._string(table, "app.author", required=False)
        endpoint = self._string(table, "app.endpoint", required=False)
        if name is None:
            return None
        return ManifestApp(name=name, version=version, author=author, endpoint=endpoint)

    def _read_config(self, document: dict[str, Any]) -> ManifestConfig | None:
        table = self._table(
            document, "config", 'a [config] table with lang = "python3" and run = "..."'
        )
        if table is None:
            return None
        self._warn_unknown(
            table, "config", {"lang", "run", "port", "domain", "test", "healthcheck"}
        )
        lang = self._lang(table)
        run = self._run(table)
        port = self._port(table)
        domain = self._domain(table)
        test = _none_if_blank(self._string(table, "config.test", required=False))
        healthcheck = self._healthcheck(table)
        # A route and an HTTP probe both need to know where the app listens.
        if "port" not in table:
            for field, value in (("domain", domain), ("healthcheck", healthcheck)):
                if value is not None:
                    self._error(
                        f"config.{field}",
                        "is set but config.port is not, so nothing can be routed or probed",
                        f"config.{field} together with config.port",
                    )
        if lang is None or run is None:
            return None
        return ManifestConfig(
            lang=lang, run=run, port=port, domain=domain, test=test, healthcheck=healthcheck
        )

    def _read_env(self, document: dict[str, Any]) -> dict[str, str]:
        sections = [name for name in ("env-vars", "env") if name in document]
        if len(sections) == 2:
            self._error(
                "env",
                "is given twice, as [env-vars] and as [env]",
                "one of [env-vars] or [env]",
            )
        env: dict[str, str] = {}
        for section in sections:
            table = self._table(document, section, 'a table of NAME = "value" strings')
            if table is not None:
                env.update(self._env_table(section, table))
        return env

    def _env_table(self, section: str, table: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for name, value in table.items():
            field = f"{section}.{_key(name)}"
            name_problem = _env_name_problem(name)
            if name_problem is not None:
                self._error(
                    field, name_problem, "a name without '=' or control characters, e.g. API_URL"
                )
            # The value is never shown: environment values are often secrets.
            if not isinstance(value, str):
                self._error(
                    field,
                    f"is {_kind(value)}, not a string",
                    f'a string: quote it, e.g. {_key(name)} = "value"',
                )
            elif "\x00" in value:
                self._error(field, "contains a NUL character", "text without NUL characters")
            elif name_problem is None:
                env[name] = value
        return env

    # -- fields --

    def _app_name(self, table: dict[str, Any]) -> str | None:
        name = self._string(table, "app.name", required=True, allowed=APP_NAME_RULE)
        if name is None:
            return None
        problem = _label_problem(name, "app name")
        if problem is None:
            return name
        suggestion = _suggest_label(name)
        if suggestion is not None and suggestion != name:
            problem += f' (try "{suggestion}")'
        self._error("app.name", problem, APP_NAME_RULE)
        return None

    def _lang(self, table: dict[str, Any]) -> Language | None:
        allowed = "one of " + ", ".join(sorted(language.value for language in Language))
        lang = self._string(table, "config.lang", required=True, allowed=allowed)
        if lang is None:
            return None
        try:
            return Language(lang)
        except ValueError:
            self._error("config.lang", f"{_show(lang)} is not a supported language", allowed)
            return None

    def _run(self, table: dict[str, Any]) -> str | None:
        allowed = 'the command that starts the app, e.g. run = "python3 main.py"'
        run = self._string(table, "config.run", required=True, allowed=allowed)
        if run is not None and not run.strip():
            self._error("config.run", "is empty", allowed)
            return None
        return run

    def _port(self, table: dict[str, Any]) -> int | None:
        allowed = f"an integer from {PORT_RANGE.start} to {PORT_RANGE.stop - 1}"
        if "port" not in table:
            return None
        port = table["port"]
        # bool is a subclass of int in Python, and ``port = true`` is never meant as port 1.
        if isinstance(port, bool) or not isinstance(port, int):
            self._error(
                "config.port", f"is {_kind(port)}, not an integer", allowed + " (no quotes)"
            )
            return None
        if port not in PORT_RANGE:
            self._error("config.port", f"{port} is out of range", allowed)
            return None
        return port

    def _domain(self, table: dict[str, Any]) -> str | None:
        allowed = "a host name such as app.example.com, without scheme, port or path"
        domain = _none_if_blank(self._string(table, "config.domain", required=False))
        if domain is None:
            return None
        problem = _domain_problem(domain)
        if problem is not None:
            self._error("config.domain", problem, allowed)
            return None
        return domain.lower()

    def _healthcheck(self, table: dict[str, Any]) -> str | None:
        allowed = 'an absolute HTTP path without spaces, such as "/health"'
        path = _none_if_blank(self._string(table, "config.healthcheck", required=False))
        if path is None:
            return None
        problem: str | None = None
        if not path.startswith("/"):
            problem = f'{_show(path)} does not start with "/"'
        elif any(char.isspace() or _is_control(char) for char in path):
            problem = f"{_show(path)} contains spaces or control characters"
        elif len(path) > MAX_PATH_LENGTH:
            problem = f"is {len(path)} characters long, more than {MAX_PATH_LENGTH}"
        if problem is not None:
            self._error("config.healthcheck", problem, allowed)
            return None
        return path

    # -- helpers --

    def _table(self, document: dict[str, Any], name: str, allowed: str) -> dict[str, Any] | None:
        if name not in document:
            self._error(name, "is missing", allowed)
            return None
        table = document[name]
        if not isinstance(table, dict):
            self._error(name, f"is {_kind(table)}, not a table", allowed)
            return None
        return table

    def _string(
        self, table: dict[str, Any], field: str, *, required: bool, allowed: str = "a string"
    ) -> str | None:
        key = field.rpartition(".")[2]
        if key not in table:
            if required:
                self._error(field, "is missing", allowed)
            return None
        value = table[key]
        if not isinstance(value, str):
            self._error(field, f"is {_kind(value)}, not a string", f"{allowed} (in quotes)")
            return None
        return value

    def _warn_unknown(self, table: dict[str, Any], prefix: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                dotted = f"{prefix}.{_key(key)}" if prefix else _key(key)
                self.warnings.append(f"{self.file}: unknown key '{dotted}' ignored")

    def _error(self, field: str, problem: str, allowed: str) -> None:
        self.errors.append(
            ManifestError(file=self.file, field=field, problem=problem, allowed=allowed)
        )


def _label_problem(label: str, what: str) -> str | None:
    """Say why ``label`` is not a lowercase RFC 1123 DNS label, or return None if it is."""
    if _LABEL_RE.match(label):
        return None
    if not label:
        return "is empty"
    if len(label) > 63:
        return f"is {len(label)} characters long, more than 63"
    reasons: list[str] = []
    if any("A" <= char <= "Z" for char in label):
        reasons.append("upper-case letters")
    bad = sorted({char for char in label if not _is_label_char(char.lower())})
    if bad:
        reasons.append(" and ".join(_show(char) for char in bad[:5]))
    if label.startswith("-"):
        reasons.append("a leading '-'")
    if label.endswith("-"):
        reasons.append("a trailing '-'")
    because = f": it has {', '.join(reasons)}" if reasons else ""
    return f"{_show(label)} is not a valid {what}{because}"


def _is_label_char(char: str) -> bool:
    return "a" <= char <= "z" or "0" <= char <= "9" or char == "-"


def _suggest_label(value: str) -> str | None:
    candidate = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")[:63].rstrip("-")
    return candidate if _LABEL_RE.match(candidate) else None


def _domain_problem(domain: str) -> str | None:
    shown = _show(domain)
    if "://" in domain:
        return f"{shown} includes a URL scheme"
    if "/" in domain:
        return f"{shown} includes a path"
    if ":" in domain:
        return f"{shown} includes a port"
    if len(domain) > MAX_DOMAIN_LENGTH:
        return f"is {len(domain)} characters long, more than {MAX_DOMAIN_LENGTH}"
    labels = domain.lower().split(".")
    if len(labels) < 2:
        return f"{shown} has no dot; a domain has at least two labels"
    for label in labels:
        if not label:
            return f"{shown} has an empty label (a leading, trailing or double '.')"
        problem = _label_problem(label, "domain label")
        if problem is not None:
            return f"{shown}: {problem}"
    if labels[-1].isdigit():
        return f"{shown} is an IP address, not a domain"
    return None


def _env_name_problem(name: str) -> str | None:
    if not name:
        return "is an empty name"
    if "=" in name:
        return "has '=' in its name"
    if any(_is_control(char) for char in name):
        return "has control characters in its name"
    return None


def _none_if_blank(value: str | None) -> str | None:
    return value if value is not None and value.strip() else None


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"


def _key(key: str) -> str:
    """Spell a key as TOML would: bare if it can be, quoted otherwise."""
    return key if _BARE_KEY_RE.match(key) else json.dumps(key)


def _show(value: str) -> str:
    """Quote a user's string for an error, shortened and with control characters escaped."""
    if len(value) > _SHOWN_CHARS:
        value = value[:_SHOWN_CHARS] + "..."
    return json.dumps(value, ensure_ascii=False)


def _kind(value: object) -> str:
    """Name a TOML value's type the way the TOML documentation does."""
    kinds: Sequence[tuple[type | tuple[type, ...], str]] = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
        (dt.datetime, "a date-time"),
        (dt.date, "a date"),
        (dt.time, "a time"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), "a value")
