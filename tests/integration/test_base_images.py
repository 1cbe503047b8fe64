"""The local base images that `just images` builds, and what the language templates need
from them: python3 >= 3.11 with pip and venv, node with npm, all of it offline.

Missing images or an unreachable daemon fail these tests (never skip them): the Docker
tests of the rest of the suite would otherwise fail later and less clearly.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
from docker.errors import ContainerError, DockerException, ImageNotFound
from docker.models.images import Image

pytestmark = pytest.mark.docker

PYTHON_IMAGE = "shipwreck/base-python:bookworm"
NODE_IMAGE = "shipwreck/base-node:bookworm"
RECIPE_LABEL = "org.shipwreck.recipe"

# A package that pip can build and install with no index: the images are run without a
# network, so each check proves the tool works on its own.
LOCAL_PYTHON_PACKAGE = """
mkdir -p /tmp/pkg/hello
echo 'GREETING = "hello"' > /tmp/pkg/hello/__init__.py
cat > /tmp/pkg/pyproject.toml <<'EOF'
[project]
name = "hello"
version = "1.0"
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
EOF
"""


# The client, or why there is none: failing in the fixture would report an ERROR at setup,
# so the tests themselves fail instead, through _image.
Docker = docker.DockerClient | DockerException
START_DOCKER = "start dockerd (`dockerd > /var/log/dockerd.log 2>&1 &`), then run `just images`"


@pytest.fixture(scope="module")
def client() -> Iterator[Docker]:
    try:
        client = docker.from_env()
    except DockerException as e:
        yield e
        return
    yield client
    client.close()


def _image(client: Docker, tag: str) -> Image:
    try:
        if isinstance(client, DockerException):
            raise client
        client.ping()
    except DockerException as e:
        pytest.fail(f"the Docker daemon is unreachable ({e}): {START_DOCKER}", pytrace=False)
    try:
        return client.images.get(tag)
    except ImageNotFound:
        pytest.fail(f"image {tag} is missing: build it with `just images`", pytrace=False)


def _run(client: Docker, tag: str, script: str) -> str:
    """Run ``script`` with ``sh -e`` in a throwaway container of ``tag``, offline; its stdout."""
    image = _image(client, tag)
    assert isinstance(client, docker.DockerClient)
    try:
        out = client.containers.run(
            image, ["sh", "-ec", script], remove=True, network_disabled=True
        )
    except ContainerError as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        pytest.fail(f"in {tag}, exit {e.exit_status}:\n{script}\nstderr:\n{stderr}", pytrace=False)
    return out.decode().strip()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.lstrip("v").split(".")[:2])


def test_python_image_has_python_3_11_or_newer(client: Docker) -> None:
    out = _run(
        client, PYTHON_IMAGE, "python3 -c 'import platform; print(platform.python_version())'"
    )
    assert _version(out) >= (3, 11), out


def test_python_image_builds_a_venv_and_pip_installs_a_wheel_into_it(
    client: Docker,
) -> None:
    out = _run(
        client,
        PYTHON_IMAGE,
        LOCAL_PYTHON_PACKAGE
        + """
        pip wheel --quiet --no-deps --no-index --no-build-isolation --wheel-dir /tmp/dist /tmp/pkg
        python3 -m venv /tmp/v
        /tmp/v/bin/pip install --quiet --no-index /tmp/dist/hello-1.0-py3-none-any.whl
        /tmp/v/bin/python -c 'import hello, sys; print(sys.prefix, hello.GREETING)'
        """,
    )
    assert out == "/tmp/v hello"


def test_python_image_lets_pip_install_system_wide_like_python_slim(
    client: Docker,
) -> None:
    # A template's plain `pip install -r requirements.txt` must not meet PEP 668's refusal.
    out = _run(
        client,
        PYTHON_IMAGE,
        LOCAL_PYTHON_PACKAGE
        + """
        pip install --quiet --no-index --no-build-isolation /tmp/pkg
        python -c 'import hello; print(hello.GREETING)'
        """,
    )
    assert out == "hello"


def test_node_image_has_node_and_npm_that_installs_a_local_package(
    client: Docker,
) -> None:
    out = _run(
        client,
        NODE_IMAGE,
        """
        mkdir -p /tmp/lib /tmp/app
        echo '{"name": "lib", "version": "1.0.0", "main": "index.js"}' > /tmp/lib/package.json
        echo 'module.exports = "hello"' > /tmp/lib/index.js
        echo '{"name": "app", "version": "1.0.0"}' > /tmp/app/package.json
        cd /tmp/app
        npm install --offline --no-audit --no-fund --loglevel=error /tmp/lib >&2
        node --version
        npm --version
        node -e 'console.log(require("lib"))'
        """,
    )
    node, npm, greeting = out.splitlines()
    assert _version(node) >= (18, 0), node
    assert _version(npm) >= (9, 0), npm
    assert greeting == "hello"


@pytest.mark.parametrize("tag", [PYTHON_IMAGE, NODE_IMAGE])
def test_base_image_has_template_defaults_and_its_recipe(client: Docker, tag: str) -> None:
    image = _image(client, tag)
    config = image.attrs["Config"]
    assert image.labels.get(RECIPE_LABEL), f"{tag} has no {RECIPE_LABEL} label"
    assert config["WorkingDir"] == "/app"
    assert "LANG=C.UTF-8" in config["Env"]
    # The public CAs, for templates that fetch over https; a proxy's CA is added per build.
    assert _run(client, tag, "test -s /etc/ssl/certs/ca-certificates.crt && echo ok") == "ok"
