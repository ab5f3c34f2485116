#!/bin/bash
# usage: kefu-callgrind.sh NAME RATE [DURATION]  — kefu under callgrind, driven by `kefu bench relay --url`.
set -eu
K=${K:-target/profiling/kefu}
OUT=${PROFILE_DIR:-/tmp/kefu-profile}/$1; RATE=$2; DUR=${3:-20}; AGENTS=5; VISITORS=100
rm -rf "$OUT"; mkdir -p "$OUT/data"
export KEFU_LOG__LEVEL=warn
site=$($K admin create-site --name bench --origin '*' --data-dir "$OUT/data" | sed -n 's/^site_key=//p')
agent_args=()
for i in $(seq 0 $((AGENTS-1))); do
  $K admin create-agent --email agent$i@bench.invalid --password bench-agent-password --site "$site" --capacity 1000000 --data-dir "$OUT/data" >/dev/null
  agent_args+=(--agent agent$i@bench.invalid:bench-agent-password)
done
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
env KEFU_LIMITS__FRAMES_PER_SECOND=1000000 KEFU_LIMITS__FRAME_BURST=1000000 KEFU_LIMITS__OUTBOUND_QUEUE=4096 \
  KEFU_LIMITS__VISITOR_SESSIONS_PER_ADDRESS_PER_HOUR=1000000000 KEFU_LIMITS__UPLOADS_PER_ADDRESS_PER_HOUR=1000000000 \
  KEFU_LIMITS__OFFLINE_MESSAGES_PER_ADDRESS_PER_HOUR=1000000000 KEFU_LIMITS__MAX_HTTP_CONNECTIONS_PER_IP=4096 \
  KEFU_LIMITS__MAX_HTTP_CONNECTIONS=4096 KEFU_QUIC=off KEFU_METRICS=off \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" $K serve --data-dir "$OUT/data" --http 127.0.0.1:$PORT 2> "$OUT/server.log" &
VPID=$!
for i in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.5; done
$K bench relay --url http://127.0.0.1:$PORT --site "$site" "${agent_args[@]}" -n $VISITORS --agents $AGENTS --rates $RATE --duration $DUR --server-pid $VPID > "$OUT/bench.txt" 2>&1 || echo "bench failed" >> "$OUT/bench.txt"
sleep 2
kill -TERM $VPID; wait $VPID || true
grep -h "summary\|totals" "$OUT/callgrind.out" | head
