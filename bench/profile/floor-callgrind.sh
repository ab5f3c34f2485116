#!/bin/bash
# usage: floor-callgrind.sh NAME RATE [DURATION] — the floor relay under callgrind, driven by `kefu bench relay --url --bare`.
set -eu
K=${K:-target/profiling/kefu}; T=${T:-bench/tungstenite-relay/target/release/tungstenite-relay}
OUT=${PROFILE_DIR:-/tmp/kefu-profile}/$1; RATE=$2; DUR=${3:-20}
rm -rf "$OUT"; mkdir -p "$OUT"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" $T $PORT 2> "$OUT/server.log" &
VPID=$!
for i in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.5; done
agent_args=(); for i in 0 1 2 3 4; do agent_args+=(--agent a$i:x); done
$K bench relay --url http://127.0.0.1:$PORT --bare "${agent_args[@]}" -n 100 --agents 5 --rates $RATE --duration $DUR --server-pid $VPID > "$OUT/bench.txt" 2>&1 || echo "bench failed" >> "$OUT/bench.txt"
sleep 2
kill -TERM $VPID; wait $VPID || true
