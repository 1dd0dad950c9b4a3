#!/usr/bin/env bash
# Run the DAL steps in local docker, the way a user would: the host work directory mounted at
# /work, the user's AWS_* and MLFLOW_* settings passed through by name (`-e VAR`, so no value ever
# appears on a command line), and the hardening of the Kubernetes manifests (non-root, read-only
# root filesystem, no capabilities, no privilege escalation).
#
#   scripts/docker_run.sh STEP [DAL ARGS...]   STEP: synth | ingest | train | extract | evaluate
#   scripts/docker_run.sh all                  the whole pipeline, one step after the other
#
# A step runs with the defaults below (the small synthetic MARS-layout run of `make run`, each
# step reading what the previous one wrote) followed by DAL ARGS, so a flag given there wins:
#   scripts/docker_run.sh train --steps 20 --backbone resnet50
#
# Environment:
#   DAL_IMAGE       image (default dal-reid:<version>-cpu; a -cuda image with GPUS=all for GPUs)
#   WORK            host directory mounted at /work (default ./work)
#   DAL_STORE       root of datasets/runs/features/eval: /work (default) or s3://bucket/prefix
#   GPUS            value of `docker run --gpus` (e.g. all); empty: no GPU
#   NPROC           train: processes in the container (torch.distributed.run --standalone), default 1
#   DOCKER          docker command (default docker)
#   DOCKER_USER     `docker run --user` (default: your uid:gid, so /work files stay yours)
#   DOCKER_NETWORK  `docker run --network` (e.g. host, to reach a MinIO/MLflow on the host's localhost)
#   DOCKER_SHM_SIZE /dev/shm size for DataLoader workers (default 2g)
#   DRY_RUN=1       print the docker commands instead of running them
# S3 and MLflow settings are passed through by name: every exported AWS_* and MLFLOW_* variable
# except those naming host files (AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE,
# AWS_CA_BUNDLE, AWS_WEB_IDENTITY_TOKEN_FILE): put the credentials themselves in the environment.
# A MinIO or MLflow server on this host is http://host.docker.internal:PORT from the containers.
# MLflow: MLFLOW_TRACKING_URI as for a local run (a server URL), or a store inside the mounted
# work dir, e.g. sqlite:////work/mlflow/mlflow.db; unset: no tracking.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "${REPO}/pyproject.toml")"
DAL_IMAGE="${DAL_IMAGE:-dal-reid:${VERSION}-cpu}"
WORK="${WORK:-${PWD}/work}"
DAL_STORE="${DAL_STORE:-/work}"
DAL_STORE="${DAL_STORE%/}"
NPROC="${NPROC:-1}"
DOCKER="${DOCKER:-docker}"
# Files in the work dir belong to the user who runs this (the image's HOME and /tmp are tmpfs).
DOCKER_USER="${DOCKER_USER:-$(id -u):$(id -g)}"
STEPS=(synth ingest train extract evaluate)
# Settings that name files on the host (absent in the container): never passed through.
HOST_FILE_VARS='AWS_(PROFILE|CONFIG_FILE|SHARED_CREDENTIALS_FILE|CA_BUNDLE|WEB_IDENTITY_TOKEN_FILE)'

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# Defaults of each step, into the array DEFAULTS: raw images stay local (raw layouts are local
# files); everything from ingest on goes to DAL_STORE, each step reading what the previous wrote.
default_args() {
    local store="${DAL_STORE}"
    case "$1" in
        synth) DEFAULTS=(--layout mars --output /work/raw/mars) ;;
        ingest) DEFAULTS=(--dataset mars --source /work/raw/mars --output "${store}/datasets/mars") ;;
        train) DEFAULTS=(--dataset "${store}/datasets/mars" --output "${store}/runs/mars"
            --image-height 64 --image-width 32 --batch-size 32 --steps 200) ;;
        extract) DEFAULTS=(--dataset "${store}/datasets/mars" --model "${store}/runs/mars/model.pt"
            --output "${store}/features/mars.parquet") ;;
        evaluate) DEFAULTS=(--dataset "${store}/datasets/mars" --features "${store}/features/mars.parquet"
            --output "${store}/eval/mars") ;;
        *) return 1 ;;
    esac
}

run_step() {
    local step="$1"
    shift
    local -a DEFAULTS
    default_args "${step}"
    local -a dal_args=("${DEFAULTS[@]}" "$@")

    local -a cmd=("${DOCKER}" run --rm --init
        --user "${DOCKER_USER}"
        --read-only
        --tmpfs "/tmp:rw,exec,nosuid,nodev,size=4g"
        --tmpfs "/home/dal:rw,exec,nosuid,nodev,size=1g"
        --cap-drop ALL
        --security-opt no-new-privileges
        --shm-size "${DOCKER_SHM_SIZE:-2g}"
        --add-host host.docker.internal:host-gateway
        --volume "${WORK}:/work"
        --workdir /work)
    local name
    while IFS= read -r name; do
        cmd+=(--env "${name}")
    done < <(compgen -e | grep -E '^(AWS|MLFLOW)_' | grep -Evx "${HOST_FILE_VARS}" | sort || true)
    if [[ -n "${GPUS:-}" ]]; then
        cmd+=(--gpus "${GPUS}")
    fi
    if [[ -n "${DOCKER_NETWORK:-}" ]]; then
        cmd+=(--network "${DOCKER_NETWORK}")
    fi
    cmd+=("${DAL_IMAGE}")
    if [[ "${step}" == train && "${NPROC}" != 1 ]]; then
        cmd+=(python -m torch.distributed.run --standalone "--nproc-per-node=${NPROC}" -m components.train)
    else
        cmd+=("${step}")
    fi
    cmd+=("${dal_args[@]}")

    if [[ -n "${DRY_RUN:-}" ]]; then
        printf '%q ' "${cmd[@]}"
        printf '\n'
    else
        echo "==> dal ${step}" >&2
        "${cmd[@]}"
    fi
}

(($# >= 1)) || usage
step="$1"
shift
# docker needs an absolute host path for the bind mount.
case "${WORK}" in
    /*) ;;
    *) WORK="${PWD}/${WORK}" ;;
esac
if [[ -z "${DRY_RUN:-}" ]]; then
    mkdir -p "${WORK}"
fi

case "${step}" in
    all)
        (($# == 0)) || usage
        for each in "${STEPS[@]}"; do
            run_step "${each}"
        done
        ;;
    synth | ingest | train | extract | evaluate)
        run_step "${step}" "$@"
        ;;
    -h | --help | help) usage ;;
    *)
        echo "docker_run.sh: unknown step '${step}'" >&2
        usage
        ;;
esac
