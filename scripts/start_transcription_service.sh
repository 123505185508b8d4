#!/usr/bin/env bash
# Start Sona as the persistent local transcription service that existing tools
# expect on http://127.0.0.1:8765: a container restarted unless stopped, its
# data on a named volume. Re-running it replaces the container (same data);
# a container of that name that this script did not start (no label
# sona.managed-by=start_transcription_service) is left alone, and it stops.
#
#   scripts/start_transcription_service.sh            # CPU
#   SONA_GPU=1 scripts/start_transcription_service.sh # NVIDIA GPU (sona:cuda)
#
# Environment: SONA_IMAGE (default sona:cpu or sona:cuda), SONA_PORT (8765),
# SONA_CONTAINER (sona), SONA_VOLUME (sona-data). Build the image first:
#   docker build -f deploy/Dockerfile -t sona:cpu .
set -euo pipefail

port="${SONA_PORT:-8765}"
name="${SONA_CONTAINER:-sona}"
volume="${SONA_VOLUME:-sona-data}"
gpu_args=()
if [[ "${SONA_GPU:-0}" == "1" ]]; then
    image="${SONA_IMAGE:-sona:cuda}"
    gpu_args=(--gpus all)
else
    image="${SONA_IMAGE:-sona:cpu}"
fi

if ! command -v docker >/dev/null 2>&1; then
    echo "start_transcription_service: docker is not installed" >&2
    exit 1
fi

# Replace only a container this script created: it carries this label.
owner_key="sona.managed-by"
owner="start_transcription_service"
if docker container inspect "$name" >/dev/null 2>&1; then
    found="$(docker container inspect --format "{{ index .Config.Labels \"${owner_key}\" }}" "$name")"
    if [[ "$found" != "$owner" ]]; then
        echo "start_transcription_service: a container named ${name} exists and was not" \
            "started by this script (no label ${owner_key}=${owner}); leaving it alone." \
            "Remove it yourself (docker rm -f ${name}) or choose another SONA_CONTAINER." >&2
        exit 1
    fi
    docker rm -f "$name" >/dev/null
fi
docker run -d \
    --name "$name" \
    --label "${owner_key}=${owner}" \
    --restart unless-stopped \
    --read-only --tmpfs /tmp \
    --cap-drop ALL --security-opt no-new-privileges:true \
    "${gpu_args[@]}" \
    -p "127.0.0.1:${port}:8765" \
    -v "${volume}:/data" \
    -e SONA_INSECURE=true \
    "$image" >/dev/null

# Wait for the model to load: /ready answers 200 once jobs can run.
for _ in $(seq 1 60); do
    if curl -fsS "http://127.0.0.1:${port}/ready" >/dev/null 2>&1; then
        echo "sona is ready on http://127.0.0.1:${port}"
        exit 0
    fi
    sleep 2
done
echo "start_transcription_service: not ready after 120 s; docker logs ${name} says why" >&2
exit 1
