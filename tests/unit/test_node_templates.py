"""Language templates: the Dockerfile each app gets, and the build context it is built from."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from shipwreck_contracts import Language
from shipwreck_node.ports import Checkout
from shipwreck_node.settings import NodeSettings
from shipwreck_node.templates import (
    TemplateInputs,
    base_image,
    build_args,
    render_dockerfile,
    write_build_context,
)


def inputs(lang: Language = Language.PYTHON3, **changes: object) -> TemplateInputs:
    values: dict[str, object] = {
        "lang": lang,
        "base_image": "base:1",
        "run": "python3 app.py",
        "port": 8000,
        "dependency_files": frozenset({"requirements.txt"}),
        "with_ca_bundle": False,
    }
    values.update(changes)
    return TemplateInputs(**values)  # type: ignore[arg-type]


def instructions(dockerfile: str) -> list[str]:
    return [line for line in dockerfile.splitlines() if line and not line.startswith("#")]


def test_python_installs_requirements_in_a_venv_of_a_first_stage() -> None:
    lines = instructions(render_dockerfile(inputs()))
    assert lines[0] == "FROM base:1 AS deps"
    assert "RUN python3 -m venv /opt/venv" in lines
    install = next(line for line in lines if "pip install --no-cache-dir" in line)
    assert install.endswith("-r /tmp/requirements.txt")
    assert "COPY --from=deps /opt/venv /opt/venv" in lines
    assert lines[-2:] == ["EXPOSE 8000", 'CMD ["sh", "-c", "python3 app.py"]']


def test_python_without_requirements_has_one_stage_and_no_pip() -> None:
    text = render_dockerfile(inputs(dependency_files=frozenset()))
    assert "pip" not in text
    assert text.count("FROM ") == 1


def test_the_ca_bundle_is_trusted_only_while_installing() -> None:
    lines = instructions(render_dockerfile(inputs(with_ca_bundle=True)))
    install = next(line for line in lines if "pip install" in line)
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        assert f"{variable}=/tmp/shipwreck-build-ca.crt" in install
    final_stage = lines[lines.index("FROM base:1") :]
    assert not any("shipwreck-build-ca" in line for line in final_stage)
    assert not any("PIP_CERT" in line for line in final_stage)


def test_without_a_ca_bundle_nothing_points_at_one() -> None:
    assert "shipwreck-build-ca" not in render_dockerfile(inputs())


def test_node_uses_npm_ci_with_a_lockfile() -> None:
    files = frozenset({"package.json", "package-lock.json"})
    text = render_dockerfile(inputs(Language.NODE, dependency_files=files, run="node s.js"))
    assert "COPY src/package.json src/package-lock.json /app/" in text
    assert "npm ci --no-audit --no-fund" in text
    assert "COPY --from=deps /app/node_modules /app/node_modules" in text


def test_node_uses_npm_install_without_a_lockfile_and_trusts_the_ca() -> None:
    files = frozenset({"package.json"})
    text = render_dockerfile(
        inputs(Language.NODE, dependency_files=files, run="node s.js", with_ca_bundle=True)
    )
    assert "npm ci" not in text
    install = next(line for line in text.splitlines() if "npm install" in line)
    assert "npm config set cafile /tmp/shipwreck-build-ca.crt" in install
    assert "NODE_EXTRA_CA_CERTS=/tmp/shipwreck-build-ca.crt" in install


def test_node_without_package_json_just_copies_the_source() -> None:
    text = render_dockerfile(inputs(Language.NODE, dependency_files=frozenset(), run="node s.js"))
    assert "npm" not in text


def test_the_run_command_cannot_break_out_of_its_json_string() -> None:
    run = 'python3 app.py"]\nRUN rm -rf / #\\'
    cmd = instructions(render_dockerfile(inputs(run=run, port=None)))[-1]
    assert cmd.startswith("CMD ")
    assert json.loads(cmd.removeprefix("CMD ")) == ["sh", "-c", run]
    assert "EXPOSE" not in render_dockerfile(inputs(run=run, port=None))


MANIFEST = '[app]\nname = "it\'s"\n\n[env-vars]\nHOME_DIR = "$HOME ${PATH} \\n"\n'


def test_the_labels_are_one_instruction_at_the_end_with_their_values_as_build_args() -> None:
    labels = {"org.shipwreck.app": "hello", "org.shipwreck.manifest": MANIFEST, "a.b": ""}
    given = inputs(labels=labels)
    lines = instructions(render_dockerfile(given))
    assert [line.split()[0] for line in lines].count("LABEL") == 1
    arg, label = lines[-2:]
    assert lines[-3].startswith("CMD ")  # everything before is cached as without labels
    assert arg == "ARG SHIPWRECK_LABEL_0 SHIPWRECK_LABEL_1 SHIPWRECK_LABEL_2"
    assert label == (
        'LABEL "a.b"="${SHIPWRECK_LABEL_0}" "org.shipwreck.app"="${SHIPWRECK_LABEL_1}"'
        ' "org.shipwreck.manifest"="${SHIPWRECK_LABEL_2}"'
    )
    # Never written into the Dockerfile: the values reach the label as they are.
    assert build_args(given) == {
        "SHIPWRECK_LABEL_0": "",
        "SHIPWRECK_LABEL_1": "hello",
        "SHIPWRECK_LABEL_2": MANIFEST,
    }


def test_without_labels_there_is_no_label_instruction() -> None:
    text = render_dockerfile(inputs())
    assert "LABEL" not in text
    assert "ARG" not in text
    assert build_args(inputs()) == {}


@pytest.mark.parametrize("key", ['a"b', "a b", "A.b", "a$b", "a\nb", ""])
def test_a_label_key_the_template_cannot_write_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="label key"):
        render_dockerfile(inputs(labels={key: "x"}))


def test_base_images_come_from_the_settings() -> None:
    settings = NodeSettings(base_image_python="py:local", base_image_node="node:local")
    assert base_image(Language.PYTHON, settings).ref == "py:local"
    assert base_image(Language.PYTHON3, settings).setting == "SHIPWRECK_BASE_IMAGE_PYTHON"
    assert base_image(Language.NODE, settings).ref == "node:local"


def test_the_default_base_images_are_the_official_slim_ones() -> None:
    settings = NodeSettings()
    assert (settings.base_image_python, settings.base_image_node) == (
        "python:3.12-slim",
        "node:20-slim",
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    root = tmp_path / "src"
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n")
    (root / "pkg").mkdir()
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "app.py").write_text("print('hi')\n")
    return Checkout(path=root, commit="a" * 40)


def test_the_build_context_has_the_dockerfile_the_ca_and_the_source_without_git(
    checkout: Checkout, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    dest = tmp_path / "context.tar"
    write_build_context(checkout, "FROM x\n", dest, ca_bundle=ca)
    with tarfile.open(dest) as tar:
        names = set(tar.getnames())
        dockerfile = tar.extractfile("Dockerfile")
        assert dockerfile is not None
        assert dockerfile.read() == b"FROM x\n"
        assert {m.uid for m in tar.getmembers()} == {0}
    assert {"Dockerfile", "shipwreck-build-ca.crt", "src/app.py", "src/pkg/mod.py"} <= names
    assert not [name for name in names if name.startswith("src/.git")]
