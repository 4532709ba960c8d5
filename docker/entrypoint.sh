#!/bin/bash
# The container's entry point: the login from a secret file, then the app on 0.0.0.0:7860.
#
#   docker run ... simlib [APP OPTIONS]       # options of app_gradio.py, e.g. --weights none --image-size 32
#
# Login: $SIMLIB_AUTH (USER:PASSWORD) as given, else the first line of $SIMLIB_AUTH_FILE (default
# /run/secrets/simlib_auth, where Docker and Compose mount a secret named simlib_auth); never baked into the image.
# Backend: FAISS in the app's process (default), or SIMLIB_BACKEND=milvus with SIMLIB_MILVUS_URI: the first
# start indexes the gallery into that Milvus with `simlib index`, later starts serve the saved index folder.
# The gallery is /data (mounted, or baked in with --build-arg GALLERY=DIR); the index cache is the /artifacts volume.
set -euo pipefail

auth_file=${SIMLIB_AUTH_FILE:-/run/secrets/simlib_auth}
if [ -z "${SIMLIB_AUTH:-}" ] && [ -f "$auth_file" ]; then
  SIMLIB_AUTH=$(head -n 1 "$auth_file" | tr -d '\r\n')
  export SIMLIB_AUTH
  echo "entrypoint: login required (from $auth_file)" >&2
elif [ -z "${SIMLIB_AUTH:-}" ] && [ -n "${SIMLIB_AUTH_FILE:-}" ]; then
  echo "entrypoint: error: SIMLIB_AUTH_FILE=$SIMLIB_AUTH_FILE is not a file" >&2
  exit 1
fi
if [ -z "${SIMLIB_AUTH:-}" ]; then
  unset SIMLIB_AUTH # an empty value (compose passes one through) means no login
fi

serve=(--host 0.0.0.0 --port 7860)
case "${SIMLIB_BACKEND:-faiss}" in
  faiss)
    exec python /app/app_gradio.py --data /data --artifacts /artifacts "${serve[@]}" "$@"
    ;;
  milvus)
    uri=${SIMLIB_MILVUS_URI:?SIMLIB_BACKEND=milvus needs SIMLIB_MILVUS_URI, e.g. http://milvus:19530}
    index=/artifacts/index-milvus
    if [ ! -f "$index/manifest.json" ]; then
      # `simlib index` takes the gallery and model options among the app's; the rest are the app's alone.
      index_args=()
      args=("$@")
      for ((i = 0; i < ${#args[@]}; i++)); do
        case "${args[i]}" in
          --data | --label-column | --model | --weights | --image-size | --embedding-dim | --precision)
            index_args+=("${args[i]}" "${args[i + 1]:-}")
            i=$((i + 1))
            ;;
          --data=* | --label-column=* | --model=* | --weights=* | --image-size=* | --embedding-dim=* | --precision=*)
            index_args+=("${args[i]}")
            ;;
        esac
      done
      echo "entrypoint: first start: indexing the gallery into Milvus at $uri" >&2
      status=0
      python -m simlib index --data /data "${index_args[@]}" --out "$index" --backend milvus --uri "$uri" || status=$?
      if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then # 3: indexed, some unreadable images skipped
        exit "$status"
      fi
    fi
    exec python /app/app_gradio.py --index "$index" --uri "$uri" "${serve[@]}" "$@"
    ;;
  *)
    echo "entrypoint: error: SIMLIB_BACKEND must be faiss or milvus, not ${SIMLIB_BACKEND}" >&2
    exit 1
    ;;
esac
