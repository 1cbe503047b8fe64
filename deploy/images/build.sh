#!/usr/bin/env bash
# Build Shipwreck's local container images.
#
# No container registry is reachable on the machines Shipwreck is developed and tested
# on, so the base images of the language templates are made here from Debian packages:
# mmdebstrap builds a root filesystem, `docker import` turns it into an image. Each
# image carries the hash of its recipe in the label org.shipwreck.recipe; an image whose
# recipe is unchanged is not built again.
#
# usage: deploy/images/build.sh [--force] [TARGET...]
#
#   python    shipwreck/base-python:bookworm   python3 (3.11), pip, venv
#   node      shipwreck/base-node:bookworm     nodejs (18), npm
#   base      python and node (the default)
#   services  shipwreck/services:dev from deploy/Dockerfile (the image compose.yaml runs)
#   all       base and services
#
#   --force   rebuild the base images even when their recipe is unchanged
#
# Environment:
#   SHIPWRECK_APT_SOURCES      apt sources file (one-line or deb822 format) to build from;
#                              default: the host's own Debian sources, else deb.debian.org
#   SHIPWRECK_BUILD_CA_BUNDLE  CA bundle the services build trusts when it downloads from
#                              PyPI; default /etc/ssl/certs/ca-certificates.crt (behind a
#                              TLS-intercepting proxy it holds the proxy's CA)

# The hooks below are single-quoted on purpose (mmdebstrap's sh expands them) and the
# package lists use mmdebstrap's comma syntax.
# shellcheck disable=SC2016,SC2054
set -euo pipefail

readonly SUITE=bookworm
readonly RECIPE_LABEL=org.shipwreck.recipe
readonly PYTHON_TAG=shipwreck/base-python:$SUITE
readonly NODE_TAG=shipwreck/base-node:$SUITE
readonly SERVICES_TAG=shipwreck/services:dev
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
readonly HERE ROOT
# Read by the hooks below; passed by environment so that the recipe hash does not depend
# on where the checkout lives.
export SHIPWRECK_IMAGES_DIR=$HERE

log() { printf '%s\n' "$*" >&2; }
die() { log "build.sh: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() { sed -n '/^# usage:/,/^$/{/^$/d; s/^# \{0,1\}//; p}' "${BASH_SOURCE[0]}"; }

# Shared by every base image. The apt variant is the Essential:yes packages plus apt and
# what --include pulls in: no init, no docs, nothing a container does not run. apt stays,
# as in python:3.x-slim and node:x-slim, so that a Dockerfile on top can add packages
# (deploy/Dockerfile adds git); its package lists are dropped.
readonly COMMON_ARGS=(
    --variant=apt
    # usr-is-merged instead of usrmerge, which would drag perl (46 MB) into the image
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata
    --aptopt='Acquire::Languages "none"'
    # docker mounts its own /dev
    --skip=output/dev
    # Exclude docs from here on. Not --dpkgopt: that pipes every package through
    # mmtarfilter while extracting, which costs ~15 s per image.
    --extract-hook='install -D -m 0644 "$SHIPWRECK_IMAGES_DIR/nodoc.dpkg.cfg" "$1/etc/dpkg/dpkg.cfg.d/01shipwreck-nodoc"'
    # ... and drop the docs that the extraction stage wrote before the exclusions existed.
    --customize-hook='set -eu; cd "$1"
        find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
        find usr/share/doc -mindepth 1 -type d -empty -delete
        rm -rf usr/share/man/* usr/share/info/* usr/share/lintian/*
        find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
        rm -f etc/hostname etc/resolv.conf
        install -D -m 0644 "$SHIPWRECK_IMAGES_DIR/apt-docker.conf" etc/apt/apt.conf.d/01shipwreck-docker
        # with that config, mmdebstrap'"'"'s own cleanup no longer finds these
        rm -f var/cache/apt/*.bin
        mkdir -p app'
)

readonly COMMON_CHANGES=(
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change 'WORKDIR /app'
)

readonly PYTHON_ARGS=(
    --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates
    # An image is the whole environment, as in python:3.x-slim: a template's plain
    # `pip install -r requirements.txt` must work, which PEP 668's marker forbids.
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED'
)
readonly PYTHON_CHANGES=(
    --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1'
    --change 'LABEL org.opencontainers.image.description="Debian bookworm with python3, pip and venv; built by Shipwreck"'
    --change 'CMD ["python3"]'
)

readonly NODE_ARGS=(
    --include=nodejs,npm,ca-certificates
)
readonly NODE_CHANGES=(
    --change 'LABEL org.opencontainers.image.description="Debian bookworm with nodejs and npm; built by Shipwreck"'
    --change 'CMD ["node"]'
)

# The apt sources the host itself uses (its mirror, through its proxy), if they are for
# $SUITE; none means mmdebstrap's default, deb.debian.org plus updates and security.
apt_sources() {
    if [[ -n ${SHIPWRECK_APT_SOURCES:-} ]]; then
        [[ -r $SHIPWRECK_APT_SOURCES ]] || die "SHIPWRECK_APT_SOURCES=$SHIPWRECK_APT_SOURCES is not readable"
        printf '%s\n' "$SHIPWRECK_APT_SOURCES"
        return
    fi
    local f
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [[ -r $f ]] && grep -Eq "^[^#]*(Suites:.*|deb .*)\\b$SUITE\\b" "$f"; then
            printf '%s\n' "$f"
            return
        fi
    done
}

# mmdebstrap is bound by dpkg's many small writes and fsyncs: in tmpfs the node image's
# root filesystem takes 40 s instead of 70 s on this machine's disk. Use /dev/shm when
# it allows executables and has room for a root filesystem and its tarball.
scratch_dir() {
    local avail
    if [[ -d /dev/shm && -w /dev/shm ]] \
        && ! findmnt -n -o OPTIONS --target /dev/shm | grep -qw noexec \
        && avail=$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }') \
        && ((avail > 2 * 1024 * 1024)); then
        printf '/dev/shm\n'
    else
        printf '%s\n' "${TMPDIR:-/tmp}"
    fi
}

recipe_hash() {
    { printf '%s\n' "$SUITE" "$@"; cat "$HERE/nodoc.dpkg.cfg" "$HERE/apt-docker.conf"; } \
        | sha256sum | cut -c1-16
}

image_label() {
    docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

describe() {
    local id size
    read -r id size < <(docker image inspect -f '{{ .Id }} {{ .Size }}' "$1")
    printf '%s  %d MiB' "${id:0:19}" $((size / 1048576))
}

summary=()

# build_base TAG -- MMDEBSTRAP_ARGS... -- DOCKER_IMPORT_CHANGES...
build_base() {
    local tag=$1; shift; shift
    local args=() changes=()
    while [[ $1 != -- ]]; do args+=("$1"); shift; done
    shift
    changes=("$@")

    local hash
    hash=$(recipe_hash "${args[@]}" "${changes[@]}")
    local old
    old=$(image_label "$tag" "$RECIPE_LABEL")
    if [[ $old == "$hash" && $force == 0 ]]; then
        log "==> $tag: up to date (recipe $hash)"
        summary+=("$(printf '%-34s up to date    %s' "$tag" "$(describe "$tag")")")
        return
    fi
    local old_id
    old_id=$(docker image inspect -f '{{ .Id }}' "$tag" 2>/dev/null || true)

    log "==> $tag: building (recipe $hash${old:+, was $old})"
    local t0 t1 sources=()
    t0=$(now)
    local src
    src=$(apt_sources)
    [[ -n $src ]] && sources=("$src")
    local tarball="$work/${tag//[\/:]/_}.tar" mmlog="$work/${tag//[\/:]/_}.log"
    if ! TMPDIR=$scratch mmdebstrap "${args[@]}" "$SUITE" "$tarball" "${sources[@]}" >"$mmlog" 2>&1; then
        tail -n 40 "$mmlog" >&2
        die "mmdebstrap failed for $tag (log above)"
    fi
    log "    rootfs: $(since "$t0") s, $(du -m "$tarball" | cut -f1) MB tar (apt sources: ${src:-mmdebstrap default}; scratch: $scratch)"
    t1=$(now)
    docker import "${changes[@]}" --change "LABEL $RECIPE_LABEL=$hash" \
        --message "shipwreck deploy/images/build.sh, recipe $hash" "$tarball" "$tag" >/dev/null
    rm -f "$tarball"
    log "    import: $(since "$t1") s; total $(since "$t0") s"
    # The replaced image is garbage now, unless a container still uses it.
    if [[ -n $old_id && $old_id != "$(docker image inspect -f '{{ .Id }}' "$tag")" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    summary+=("$(printf '%-34s built %5ss   %s' "$tag" "$(since "$t0")" "$(describe "$tag")")")
}

python_done=0
build_python() {
    ((python_done)) && return
    python_done=1
    build_base "$PYTHON_TAG" -- "${COMMON_ARGS[@]}" "${PYTHON_ARGS[@]}" -- "${COMMON_CHANGES[@]}" "${PYTHON_CHANGES[@]}"
}

build_node() {
    build_base "$NODE_TAG" -- "${COMMON_ARGS[@]}" "${NODE_ARGS[@]}" -- "${COMMON_CHANGES[@]}" "${NODE_CHANGES[@]}"
}

# The services image: the workspace (not tests, not the venv) plus the build CA bundle,
# streamed as the build context so that nothing is written into the checkout.
build_services() {
    build_python
    local ca=${SHIPWRECK_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    local ctx=$work/context
    mkdir -p "$ctx/deploy"
    if [[ -r $ca ]]; then
        cp "$ca" "$ctx/deploy/build-ca.crt"
    else
        log "    no CA bundle at $ca: the build trusts only the base image's CAs"
    fi
    local revision old_id
    revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    old_id=$(docker image inspect -f '{{ .Id }}' "$SERVICES_TAG" 2>/dev/null || true)
    log "==> $SERVICES_TAG: building from deploy/Dockerfile (revision $revision)"
    local t0
    t0=$(now)
    local paths=(pyproject.toml uv.lock contracts libs services deploy/Dockerfile)
    local staged=()
    [[ -e $ctx/deploy/build-ca.crt ]] && staged=(-C "$ctx" deploy/build-ca.crt)
    tar -c -f - -C "$ROOT" \
        --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
        --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache \
        "${paths[@]}" "${staged[@]}" \
        | docker build -f deploy/Dockerfile -t "$SERVICES_TAG" \
            --label "org.opencontainers.image.revision=$revision" - >&2
    if [[ -n $old_id && $old_id != "$(docker image inspect -f '{{ .Id }}' "$SERVICES_TAG")" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    summary+=("$(printf '%-34s built %5ss   %s' "$SERVICES_TAG" "$(since "$t0")" "$(describe "$SERVICES_TAG")")")
}

force=0
targets=()
for arg in "$@"; do
    case $arg in
        -f | --force) force=1 ;;
        -h | --help) usage; exit 0 ;;
        python | node | services) targets+=("$arg") ;;
        base) targets+=(python node) ;;
        all) targets+=(python node services) ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done
((${#targets[@]})) || targets=(python node)

command -v docker >/dev/null || die "docker is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the docker daemon is not reachable: start dockerd first"
command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install mmdebstrap)"

# One build at a time on a machine: CI and a developer must not race for the same tags.
exec 9>>/tmp/shipwreck-images.lock
flock 9

scratch=$(scratch_dir)
work=$(mktemp -d "$scratch/shipwreck-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

started=$(now)
done_targets=" "
for target in "${targets[@]}"; do
    [[ $done_targets == *" $target "* ]] && continue
    done_targets+="$target "
    "build_$target"
done

log "==> images ($(since "$started") s)"
printf '    %s\n' "${summary[@]}" >&2
