# Shipwreck: `just up` runs the platform, `just test` runs the whole suite.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Run every service as its own process (api, orchestrator, scheduler, watcher, node); Ctrl-C or SIGTERM stops them all.
up:
    uv sync --quiet
    uv run python deploy/preflight.py
    exec uv run honcho --no-prefix start -f deploy/Procfile -d .

# Run the whole test suite against the real RabbitMQ, PostgreSQL and Docker.
test *ARGS:
    uv run pytest {{ARGS}}

# Static checks: ruff, mypy --strict, and the import boundaries.
lint:
    uv run ruff check .
    uv run ruff format --check .
    uv run mypy
    uv run lint-imports

# Build the local base images for the language templates (mmdebstrap + docker import).
images *ARGS:
    bash deploy/images/build.sh {{ARGS}}

# Regenerate contracts/schemas/ from the message Structs.
schemas:
    uv run python contracts/generate_schemas.py

# Regenerate contracts/schema.graphql from the api's strawberry schema.
graphql-schema:
    uv run python -m shipwreck_api.sdl contracts/schema.graphql

# The fault suite: deployments on two nodes while services are killed, the broker and the
# database restart and a node dies (FAULTS_DEPLOYMENTS, FAULTS_APPS, FAULTS_KILL_EVERY, FAULTS_SEED).
faults *ARGS:
    uv run pytest tests/faults -p no:cacheprovider -o addopts="-ra --strict-markers" -s --timeout 3600 {{ARGS}}

# Run the benchmarks (all, or the files and tests named: `just bench tests/bench/test_x.py -s`); figures go to docs/BENCHMARKS.md.
[positional-arguments]
bench *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    # tests/bench only when no argument names a file or test (`-k webhook` is not one).
    paths=(tests/bench)
    for arg in "$@"; do
        if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then paths=(); fi
    done
    exec uv run pytest "${paths[@]}" -p no:cacheprovider -o addopts="" "$@"
