#!/bin/bash
# Interim measurement script until `cargo xtask bench` covers it (issue 6). Needs curl and python3.
# The 13 SSB queries at SF 1: through the API (submit -> SUCCESSFUL, then download) and in-process.
BIN=${SPOOL_BIN:-${CARGO_TARGET_DIR:-target}/debug/spool-server}
DD=${SPOOL_DATA:-/tmp/spool-sf1}
AUTH="Authorization: Basic QURNSU46S1lMSU4="
$BIN --data-dir $DD --bind 127.0.0.1:7172 --sample-sf 1 --workers 1 > /tmp/ssbq-server.log 2>&1 &
PID=$!
until curl -s http://127.0.0.1:7172/healthz >/dev/null; do sleep 0.5; done
for q in $(dirname "$0")/../../crates/spool-ssb/queries/*.sql; do
  name=$(basename $q .sql)
  body=$(python3 -c 'import json,sys;print(json.dumps({"sql":open(sys.argv[1]).read(),"project":"ssb"}))' $q)
  start=$(date +%s.%N)
  ID=$(curl -s -X POST -H "$AUTH" -H "Content-Type: application/json" -d "$body" http://127.0.0.1:7172/kylin/api/async_query | python3 -c 'import sys,json;print(json.load(sys.stdin)["data"]["queryID"])')
  while curl -s -H "$AUTH" http://127.0.0.1:7172/kylin/api/async_query/$ID/status | grep -q RUNNING; do sleep 0.01; done
  done_at=$(date +%s.%N)
  rows=$(curl -s -H "$AUTH" http://127.0.0.1:7172/kylin/api/async_query/$ID/result | wc -l)
  end=$(date +%s.%N)
  inproc=$($BIN --data-dir $DD query --project ssb "$(cat $q)" 2>&1 | grep -o '[0-9.]* ms' | tail -1)
  echo "$name | $rows | $(python3 -c "print(round(($done_at-$start)*1000))") ms | $(python3 -c "print(round(($end-$start)*1000))") ms | $inproc"
done
kill $PID
