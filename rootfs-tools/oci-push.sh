#!/usr/bin/env bash
# Pushes the image of an OCI image layout (its index.json's first manifest) to a registry that
# may want credentials, over the distribution API with curl only: anonymous, Basic
# credentials (-u) or a Bearer token (-t). Plain HTTP: for loopback test registries.
#
#   rootfs-tools/oci-push.sh [-u USER:PASS | -t TOKEN] LAYOUT_DIR HOST:PORT/REPO:TAG
set -euo pipefail

auth=()
while getopts "u:t:" opt; do
    case $opt in
    u) auth=(-u "$OPTARG") ;;
    t) auth=(-H "Authorization: Bearer $OPTARG") ;;
    *) echo "usage: oci-push.sh [-u USER:PASS | -t TOKEN] LAYOUT_DIR HOST:PORT/REPO:TAG" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
layout=${1:?usage: oci-push.sh [-u USER:PASS | -t TOKEN] LAYOUT_DIR HOST:PORT/REPO:TAG}
ref=${2:?usage: oci-push.sh [-u USER:PASS | -t TOKEN] LAYOUT_DIR HOST:PORT/REPO:TAG}
host=${ref%%/*}
rest=${ref#*/}
repo=${rest%:*}
tag=${rest##*:}
[[ $rest == *:* ]] || tag=latest
base="http://$host/v2/$repo"

blob_path() { echo "$layout/blobs/sha256/${1#sha256:}"; }

push_blob() {
    local digest=$1 file
    file=$(blob_path "$digest")
    if curl -fsS "${auth[@]}" -o /dev/null -I "$base/blobs/$digest" 2>/dev/null; then
        return 0
    fi
    local location
    location=$(curl -fsS "${auth[@]}" -X POST -D - -o /dev/null "$base/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    [[ -n $location ]] || { echo "oci-push: no upload location from $host" >&2; exit 1; }
    [[ $location == http* ]] || location="http://$host$location"
    local sep='?'
    [[ $location == *\?* ]] && sep='&'
    curl -fsS "${auth[@]}" -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$file" \
        "$location${sep}digest=$digest" -o /dev/null
}

manifest_digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$layout/index.json")
manifest=$(blob_path "$manifest_digest")
for d in $(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(m["config"]["digest"])
for l in m["layers"]:
    print(l["digest"])
' "$manifest"); do
    push_blob "$d"
done
curl -fsS "${auth[@]}" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$manifest" "$base/manifests/$tag" -o /dev/null
echo "pushed $host/$repo:$tag ($manifest_digest)"
