"""DuckDB side of `cargo xtask bench`: the same SSB SQL and the same export on the same files.

Usage:
  duckdb_bench.py queries PROJECT_DIR QUERIES_DIR RUNS   one JSON line per query: median seconds
  duckdb_bench.py serve PROJECT_DIR                      runs each SQL line read on stdin once
                                                         (a JSON string), answering one JSON line
                                                         of seconds and rows; at the end of
                                                         input, one line of peak RSS
  duckdb_bench.py export PROJECT_DIR FORMAT OUT          one JSON line: seconds, bytes, peak RSS

`serve` is what `cargo xtask bench` uses: it runs a query on DuckDB and on Spool in turn, one
run each, so both see the machine of the same second.

Tables are the project's Parquet files (or folders of them), views its `.sql` files, named as
Spool's catalog names them. Run in a fresh process per phase so peak RSS belongs to that phase.
"""

import json
import os
import resource
import statistics
import sys
import time

import duckdb


def connect(project):
    con = duckdb.connect()
    views = []
    for entry in sorted(os.listdir(project)):
        path = os.path.join(project, entry)
        stem, ext = os.path.splitext(entry)
        if ext == ".parquet":
            con.execute(f"CREATE VIEW \"{stem}\" AS SELECT * FROM read_parquet('{path}')")
        elif os.path.isdir(path) and not entry.startswith("."):
            con.execute(f"CREATE VIEW \"{entry}\" AS SELECT * FROM read_parquet('{path}/*.parquet')")
        elif ext == ".sql":
            with open(path) as f:
                views.append((stem, f.read()))
    for name, sql in views:
        con.execute(f'CREATE VIEW "{name}" AS {sql}')
    return con


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(con, sql):
    """Runs `sql` once with its rows fetched; returns (seconds, rows)."""
    started = time.perf_counter()
    rows = len(con.execute(sql).fetchall())
    return time.perf_counter() - started, rows


def queries(project, queries_dir, runs):
    con = connect(project)
    for entry in sorted(os.listdir(queries_dir)):
        if not entry.endswith(".sql"):
            continue
        with open(os.path.join(queries_dir, entry)) as f:
            sql = f.read()
        times = []
        rows = 0
        for run in range(runs + 1):
            elapsed, rows = timed(con, sql)
            if run > 0:
                times.append(elapsed)
        print(json.dumps({"query": entry[:-4], "seconds": statistics.median(times), "rows": rows}), flush=True)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)


def serve(project):
    con = connect(project)
    for line in sys.stdin:
        if not line.strip():
            continue
        elapsed, rows = timed(con, json.loads(line))
        print(json.dumps({"seconds": elapsed, "rows": rows}), flush=True)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)


def export(project, fmt, out):
    con = connect(project)
    options = {"csv": "FORMAT csv, HEADER false", "parquet": "FORMAT parquet", "json": "FORMAT json, ARRAY true"}[fmt]
    started = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM P_LINEORDER) TO '{out}' ({options})")
    elapsed = time.perf_counter() - started
    size = os.path.getsize(out)
    os.remove(out)
    print(json.dumps({"format": fmt, "seconds": elapsed, "bytes": size, "peak_rss_mib": peak_rss_mib()}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "queries":
        queries(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "serve":
        serve(sys.argv[2])
    elif mode == "export":
        export(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown mode {mode}")
