"""docs/SETTINGS.md names every setting each process reads, with its type and default, and
names nothing that is not a setting (so a removed setting does not linger there)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shipwreck_api.settings import ApiSettings
from shipwreck_cli.cli import main as cli_main
from shipwreck_cli.client import DEFAULT_API_URL
from shipwreck_node.settings import NodeSettings
from shipwreck_orchestrator.settings import OrchestratorSettings
from shipwreck_runtime import load_settings
from shipwreck_scheduler.settings import SchedulerSettings
from shipwreck_watcher.settings import WatcherSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "SETTINGS.md"

STRUCTS: dict[str, type[msgspec.Struct]] = {
    "api": ApiSettings,
    "orchestrator": OrchestratorSettings,
    "scheduler": SchedulerSettings,
    "watcher": WatcherSettings,
    "node": NodeSettings,
}

# The CLI has no settings Struct: it reads these variables itself (see
# test_the_cli_reads_exactly_the_variables_listed_here), all as text.
CLI_DEFAULTS: dict[str, str | None] = {
    "SHIPWRECK_API_URL": DEFAULT_API_URL,
    "SHIPWRECK_API_TOKEN": None,
    "SHIPWRECK_STATE_DIR": ".shipwreck",
}

PROCESSES = [*STRUCTS, "cli"]
SHARED = "shared"
VARIABLE = re.compile(r"\bSHIPWRECK_[A-Z0-9_]+")


class RecordingEnvironment(Mapping[str, str]):
    """An empty environment that notes every variable asked for, in order."""

    def __init__(self, asked: list[str]) -> None:
        self.asked = asked

    def __getitem__(self, key: str) -> str:
        self.asked.append(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        self.asked.append(str(key))
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class Setting:
    variable: str
    kind: str
    """How the type column must describe it: ``integer 1-65535``, ``number > 0``, ``text``..."""
    default: str
    """How the default column must show it: ``unset``, ``empty`` or the value in backticks."""


def kind_of(annotation: Any) -> str:
    info = msgspec.inspect.type_info(annotation)
    if isinstance(info, msgspec.inspect.UnionType):
        (info,) = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
    if isinstance(info, msgspec.inspect.Metadata):  # e.g. the log level's allowed names
        info = info.type
    names = {
        msgspec.inspect.StrType: "text",
        msgspec.inspect.IntType: "integer",
        msgspec.inspect.FloatType: "number",
        msgspec.inspect.BoolType: "boolean",
    }
    kind = names[type(info)]
    ge, gt, le = (getattr(info, bound, None) for bound in ("ge", "gt", "le"))
    if ge is not None and le is not None:
        return f"{kind} {ge:g}-{le:g}"
    if ge is not None:
        return f"{kind} ≥ {ge:g}"
    if gt is not None:
        return f"{kind} > {gt:g}"
    return kind


def shown(default: object) -> str:
    if default is None:
        return "unset"
    if default == "":
        return "empty"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"  # as it is written in the environment
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


def struct_settings(cls: type[msgspec.Struct]) -> dict[str, Setting]:
    # The variables load_settings itself looks up, one per field in field order: whatever
    # its mapping from field to variable, the doc is checked against the real names.
    asked: list[str] = []
    defaults = load_settings(cls, RecordingEnvironment(asked))
    fields = msgspec.structs.fields(cls)
    assert len(asked) == len(fields), f"load_settings asked for {asked} for {len(fields)} fields"
    return {
        variable: Setting(variable, kind_of(field.type), shown(getattr(defaults, field.name)))
        for variable, field in zip(asked, fields, strict=True)
    }


def settings_of(process: str) -> dict[str, Setting]:
    if process == "cli":
        return {name: Setting(name, "text", shown(d)) for name, d in CLI_DEFAULTS.items()}
    return struct_settings(STRUCTS[process])


def doc_sections() -> dict[str, str]:
    """The doc's ``## `` sections by the heading's first word, lower-case."""
    sections: dict[str, str] = {}
    for part in re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)[1:]:
        heading, _, body = part.partition("\n")
        sections[heading.split()[0].lower()] = body
    return sections


def table_rows(section: str) -> dict[str, dict[str, str]]:
    """The section's table rows by variable, each a mapping of column name to cell."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in section.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = [c.lower() for c in cells]
        elif not set(line) <= set("|-: "):
            row = dict(zip(header, cells, strict=True))
            rows[row["variable"].strip("`")] = row
    return rows


def readers(row: dict[str, str]) -> set[str]:
    return {name.strip().lower() for name in row["read by"].split(",")}


def test_the_doc_has_a_section_per_process_and_one_for_shared_settings() -> None:
    assert set(doc_sections()) >= {SHARED, *PROCESSES}, sorted(doc_sections())


@pytest.mark.parametrize("process", PROCESSES)
def test_every_setting_is_documented_with_its_type_and_default(process: str) -> None:
    sections = doc_sections()
    own = table_rows(sections.get(process, ""))
    shared = table_rows(sections.get(SHARED, ""))
    missing, wrong = [], []
    for variable, setting in settings_of(process).items():
        row = own.get(variable)
        if row is None and variable in shared and process in readers(shared[variable]):
            row = shared[variable]
        if row is None:
            missing.append(f"{variable} ({setting.kind}, default {setting.default})")
            continue
        if setting.default not in row["default"]:
            wrong.append(f"{variable}: the default column should show {setting.default}")
        if setting.kind not in row["type"]:
            wrong.append(f"{variable}: the type column should say {setting.kind!r}")
    assert not missing, (
        f"docs/SETTINGS.md does not document these {process} settings, neither in its "
        f"section nor as shared settings read by {process}: {', '.join(missing)}"
    )
    assert not wrong, f"docs/SETTINGS.md is out of date for {process}: " + "; ".join(wrong)


@pytest.mark.parametrize("process", PROCESSES)
def test_a_process_is_documented_with_no_setting_it_does_not_read(process: str) -> None:
    sections = doc_sections()
    listed = set(table_rows(sections.get(process, "")))
    listed |= {v for v, row in table_rows(sections[SHARED]).items() if process in readers(row)}
    unknown = sorted(listed - set(settings_of(process)))
    assert not unknown, (
        f"docs/SETTINGS.md lists settings {process} does not read (removed or renamed?): "
        + ", ".join(unknown)
    )


def test_every_variable_the_doc_names_is_a_setting() -> None:
    real = {variable for process in PROCESSES for variable in settings_of(process)}
    unknown = sorted(set(VARIABLE.findall(DOC.read_text())) - real)
    assert not unknown, (
        "docs/SETTINGS.md names variables no process reads (removed or renamed settings, or "
        "placeholders; write each variable out in full): " + ", ".join(unknown)
    )


def test_the_cli_reads_exactly_the_variables_listed_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No token anywhere (an empty working directory): the CLI fails before any request.
    monkeypatch.chdir(tmp_path)
    asked: list[str] = []
    err = io.StringIO()
    code = cli_main(["status"], out=io.StringIO(), err=err, environ=RecordingEnvironment(asked))
    assert code == 2, err.getvalue()
    assert "no API token" in err.getvalue()
    assert set(asked) == set(CLI_DEFAULTS)
