#!/bin/sh
# Test workload: misbehaves as the event's payload asks.
while IFS= read -r line; do
  what=$(printf '%s\n' "$line" | sed -n 's/.*"payload":"\([^"]*\)".*/\1/p')
  case "$what" in
    silent) sleep 1000 ;;
    flood) yes flood ;;
    flood-emits) yes '{"emit":{"type":"out","payload":"x"}}' ;;
    bigline) head -c 8000000 /dev/zero | tr '\0' a ;;
    crash) exit 3 ;;
    undeclared)
      echo '{"emit":{"type":"nope","payload":"x"}}'
      echo '{"emit":{"type":"out","payload":"y"}}'
      echo '{"result":"ok"}' ;;
    vsock)
      if [ -d /sys/module/vmw_vsock_virtio_transport ]; then v=yes; else v=no; fi
      printf '{"emit":{"type":"out","payload":"vsock:%s"}}\n{"result":"ok"}\n' "$v" ;;
    fail) echo '{"result":"err","code":"bad-input","message":"asked to fail"}' ;;
    *) printf '{"emit":{"type":"out","payload":"echo:%s"}}\n{"result":"ok"}\n' "$what" ;;
  esac
done
