#!/bin/bash
# Interim measurement script until `cargo xtask bench` covers it (issue 6). Needs curl and python3.
# Per-format export of select * from p_lineorder at SF 1 through the real server.
BIN=${SPOOL_BIN:-${CARGO_TARGET_DIR:-target}/debug/spool-server}
DD=${SPOOL_DATA:-/tmp/spool-sf1}
AUTH="Authorization: Basic QURNSU46S1lMSU4="
for fmt in ${FORMATS:-csv parquet json xlsx}; do
  $BIN --data-dir $DD --bind 127.0.0.1:7171 --sample-sf 1 --workers 1 > /tmp/m5-$fmt.log 2>&1 &
  PID=$!
  until curl -s http://127.0.0.1:7171/healthz >/dev/null; do sleep 0.5; done
  start=$(date +%s.%N)
  ID=$(curl -s -X POST -H "$AUTH" -H "Content-Type: application/json" -d "{\"sql\":\"select * from p_lineorder\",\"project\":\"ssb\",\"format\":\"$fmt\"}" http://127.0.0.1:7171/kylin/api/async_query | python3 -c 'import sys,json;print(json.load(sys.stdin)["data"]["queryID"])')
  while true; do
    ST=$(curl -s -H "$AUTH" http://127.0.0.1:7171/kylin/api/async_query/$ID/status)
    echo "$ST" | grep -q RUNNING || break
    sleep 0.1
  done
  end=$(date +%s.%N)
  SIZE=$(curl -s -H "$AUTH" http://127.0.0.1:7171/kylin/api/async_query/$ID/file_status)
  RSS=$(grep VmHWM /proc/$PID/status)
  echo "$fmt: $(python3 -c "print(round($end-$start,2))") s; status: $(echo $ST | python3 -c 'import sys,json;d=json.load(sys.stdin)["data"];print(d["status"], d["info"][:120])'); size: $SIZE; $RSS"
  kill $PID; wait $PID 2>/dev/null
done
