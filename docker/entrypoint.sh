#!/bin/sh
# Entry point of the dal step image.
#   docker run IMAGE train --dataset ...        -> dal train --dataset ...
#   docker run IMAGE                            -> dal --help
#   docker run IMAGE python -m torch.distributed.run ... / sh -c ...  -> run as given
# A first argument that names a program on PATH runs unchanged: KFP's DockerRunner sets the
# container command (`sh -c ...`), not the entrypoint. Kubernetes `command:` bypasses this file.
set -eu
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ] && command -v -- "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec dal "$@"
