# TPC-H and TPC-DS for Spool's tests and bench, from DuckDB's own extensions (PyPI:
# duckdb-extension-tpch / duckdb-extension-tpcds, pinned to the duckdb they were built for).
#
#   python tpc.py SUITE SF OUT
#
# writes, for SUITE `tpch` or `tpcds` at scale factor SF:
#   OUT/data/<TABLE>.parquet   every table, as DuckDB's generator makes it (names upper-cased)
#   OUT/queries/qNN.sql        the extension's queries, as DuckDB ships them
#   OUT/answers/qNN.csv        DuckDB's answer to each, run over the Parquet files above, as CSV
#                              the way Spool writes it (no header, RFC 4180 quoting, NULL empty)
#   OUT/answers/qNN.error      instead, where DuckDB itself fails
# Nothing here is Spool's: the data, the queries and the answers are DuckDB's.
import csv, datetime, decimal, io, os, sys

import duckdb


def extension(suite):
    module = __import__(f"duckdb_extension_{suite}")
    folder = os.path.join(os.path.dirname(module.__file__), "extensions")
    (version,) = os.listdir(folder)
    return os.path.join(folder, version, f"{suite}.duckdb_extension")


def text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, decimal.Decimal, int)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def main():
    suite, sf, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    data, queries, answers = (os.path.join(out, d) for d in ("data", "queries", "answers"))
    for folder in (data, queries, answers):
        os.makedirs(folder, exist_ok=True)
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension(suite)}'")
    con.execute(f"CALL {'dbgen' if suite == 'tpch' else 'dsdgen'}(sf={sf})")
    tables = [name for (name,) in con.execute("SHOW TABLES").fetchall()]
    for name in tables:
        con.execute(f"COPY {name} TO '{os.path.join(data, name.upper() + '.parquet')}' (FORMAT parquet)")
    listing = con.execute(f"SELECT query_nr, query FROM {suite}_queries() ORDER BY query_nr").fetchall()
    # The answers are computed over the Parquet files, as Spool reads them.
    reader = duckdb.connect()
    for name in tables:
        path = os.path.join(data, name.upper() + ".parquet")
        reader.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    for number, sql in listing:
        stem = f"q{number:02d}"
        with open(os.path.join(queries, stem + ".sql"), "w") as f:
            f.write(sql)
        try:
            rows = reader.execute(sql).fetchall()
        except Exception as e:
            with open(os.path.join(answers, stem + ".error"), "w") as f:
                f.write(str(e))
            continue
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in rows:
            writer.writerow([text(v) for v in row])
        with open(os.path.join(answers, stem + ".csv"), "w") as f:
            f.write(buffer.getvalue())


if __name__ == "__main__":
    main()
