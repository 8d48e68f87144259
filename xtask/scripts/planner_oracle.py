# The independent oracle for the planner front end's hand-worked answers: runs every query of
# crates/spool-engine-polars/src/planned_tests.rs on Spark SQL (local mode, its own session, no
# Spool code) over the same fixture, and prints each answer that differs. Run with the Spark
# venv `cargo xtask ci` installs: ~/.cache/spool-tools/spark-venv/bin/python xtask/scripts/planner_oracle.py
import os, re, sys, datetime, decimal
from pyspark.sql import SparkSession
from pyspark.sql.types import *

src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'crates', 'spool-engine-polars', 'src', 'planned_tests.rs')).read()

def rust_str(m):
    s = m
    s = re.sub(r'\\\n\s*', '', s)
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == '\\':
            n = s[i+1]
            out.append({'n': '\n', '"': '"', '\\': '\\', "'": "'", 't': '\t'}[n]); i += 2
        else:
            out.append(c); i += 1
    return ''.join(out)

STR = r'"((?:[^"\\]|\\.)*)"'
pairs = [(rust_str(a), rust_str(b)) for a, b in re.findall(r'\(\s*' + STR + r',\s*(?://[^\n]*\n\s*)*' + STR + r',?\s*\)', src, re.S)]
pairs = [(a, b) for a, b in pairs if a.lower().startswith(('select', 'with'))]

spark = (SparkSession.builder.master('local[1]').config('spark.ui.enabled', 'false')
         .config('spark.sql.ansi.enabled', 'false').getOrCreate())
spark.sparkContext.setLogLevel('ERROR')
D = decimal.Decimal
sales = spark.createDataFrame(
    [(1, 'ASIA', D('10.00'), 1, 'a'), (2, 'EUROPE', D('20.50'), 2, ''),
     (3, 'ASIA', D('14.99'), 3, None), (4, None, None, 4, 'd')],
    StructType([StructField('ID', LongType()), StructField('REGION', StringType()),
                StructField('PRICE', DecimalType(15, 2)), StructField('QTY', IntegerType()),
                StructField('NOTE', StringType())]))
sales.createOrReplaceTempView('sales')
spark.createDataFrame([('ASIA', 1), ('EUROPE', 2), ('AFRICA', 3)],
    StructType([StructField('NAME', StringType()), StructField('CODE', IntegerType())])).createOrReplaceTempView('regions')
spark.sql("create or replace temp view asian_sales as select id, price * 2 as double_price from sales where region = 'ASIA'")

def fmt(v):
    if v is None: return ''
    if isinstance(v, bool): return 'true' if v else 'false'
    if isinstance(v, datetime.datetime):
        t = v.strftime('%Y-%m-%d %H:%M:%S'); ms = v.microsecond // 1000
        return t + ('.' + f'{ms:03d}'.rstrip('0') if ms else '')
    if isinstance(v, datetime.date): return v.isoformat()
    if isinstance(v, str): return '""' if v == '' else v
    return str(v)

same = differ = 0
for sql, expected in pairs:
    q = re.sub(r'"([A-Za-z_]+)"', r'`\1`', sql)
    try:
        rows = spark.sql(q).collect()
        got = ''.join(','.join(fmt(v) for v in r) + '\n' for r in rows)
    except Exception as e:
        got = 'ERROR ' + str(e).split('\n')[0][:150]
    if got == expected:
        same += 1
    else:
        differ += 1
        print('DIFFERS:', sql.replace('\n', ' ')[:160]); print('  spool:', repr(expected)); print('  spark:', repr(got))
print(f'{same} same, {differ} differ, of {len(pairs)}')
