#!/bin/sh
# A frontier workload (runs inside the microVM, busybox sh): for each
# event line on stdin, decode the payload (little-endian f32s from the
# `transform` brane), and emit one `shard.stats` event with its size, then
# the result. See docs/src/frontier.md for the contract.
while IFS= read -r line; do
  b64=$(printf '%s\n' "$line" | sed -n 's/.*"payload_b64":"\([^"]*\)".*/\1/p')
  src=$(printf '%s\n' "$line" | sed -n 's/.*"source":"\([^"]*\)".*/\1/p')
  bytes=$(printf '%s' "$b64" | base64 -d 2>/dev/null | wc -c)
  floats=$((bytes / 4))
  echo "shard from $src: $bytes bytes" >&2
  printf '{"emit":{"type":"shard.stats","key":"","payload":"bytes=%s floats=%s kernel=%s"}}\n' \
    "$bytes" "$floats" "$(uname -r)"
  printf '{"result":"ok"}\n'
done
