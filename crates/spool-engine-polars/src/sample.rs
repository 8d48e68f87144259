//! Writes the SSB sample project (rows from `spool-ssb`) as Parquet files the catalog serves.
//!
//! Layout: `LINEORDER.parquet`, `CUSTOMER.parquet`, `SUPPLIER.parquet`, `PART.parquet`,
//! `DATES.parquet` and the view `P_LINEORDER.sql` (every LINEORDER column plus `V_REVENUE`).
//!
//! Invariants:
//! - Output is byte-identical for the same scale factor and seed, whatever the thread count:
//!   LINEORDER is cut into fixed chunks of orders, generated on any thread, and written in chunk
//!   order, one row group per chunk.
//! - Memory stays bounded: at most a few chunks are in flight; SF 10 never holds the whole table.
//! - The project appears whole or not at all: it is written into a hidden folder beside `dir`
//!   and renamed into place at the end.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use polars::prelude::*;
use spool_ssb::{Lineorders, Ssb};

/// What was written, per table: (name, rows, bytes).
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// One entry per table file, in writing order.
    pub tables: Vec<(String, u64, u64)>,
}

/// The SQL of the `P_LINEORDER` view.
pub const P_LINEORDER_SQL: &str =
    "SELECT *, LO_EXTENDEDPRICE * LO_DISCOUNT AS V_REVENUE FROM LINEORDER\n";

/// Writes the SSB project for `ssb` into `dir` (which must not exist yet) using `threads`
/// generator threads.
pub fn write_ssb_project(dir: &Path, ssb: &Ssb, threads: usize) -> PolarsResult<Written> {
    if dir.exists() {
        polars_bail!(ComputeError: "{} already exists", dir.display());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ssb".to_owned());
    let staging = dir.with_file_name(format!(".{name}.partial"));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(&staging)?;
    let mut written = Written::default();
    let mut record = |table: &str, rows: u64, path: &Path| -> PolarsResult<()> {
        written
            .tables
            .push((table.to_owned(), rows, fs::metadata(path)?.len()));
        Ok(())
    };
    let (rows, path) = write_lineorder(&staging, ssb, threads.max(1))?;
    record("LINEORDER", rows, &path)?;
    for (table, mut frame) in [
        ("CUSTOMER", customer_frame(ssb)?),
        ("SUPPLIER", supplier_frame(ssb)?),
        ("PART", part_frame(ssb)?),
        ("DATES", dates_frame()?),
    ] {
        let path = staging.join(format!("{table}.parquet"));
        writer(fs::File::create(&path)?).finish(&mut frame)?;
        record(table, frame.height() as u64, &path)?;
    }
    fs::write(staging.join("P_LINEORDER.sql"), P_LINEORDER_SQL)?;
    fs::rename(&staging, dir)?;
    Ok(written)
}

fn writer(file: fs::File) -> ParquetWriter<fs::File> {
    ParquetWriter::new(file).with_compression(ParquetCompression::Snappy)
}

/// Generates LINEORDER chunks on `threads` threads and writes them in order.
fn write_lineorder(dir: &Path, ssb: &Ssb, threads: usize) -> PolarsResult<(u64, PathBuf)> {
    let path = dir.join("LINEORDER.parquet");
    let chunks = ssb.chunks();
    // Chunk numbers are handed out through a bounded channel that the writer refills as it
    // writes, so no more than `window` chunks are ever generated but not yet written.
    let window = (threads * 2) as u64;
    let (ticket_tx, ticket_rx) = mpsc::channel::<u64>();
    let ticket_rx = Arc::new(Mutex::new(ticket_rx));
    let (frame_tx, frame_rx) =
        mpsc::sync_channel::<(u64, PolarsResult<DataFrame>)>(window as usize);
    for chunk in 0..window.min(chunks) {
        let _ = ticket_tx.send(chunk);
    }
    let mut next_ticket = window.min(chunks);
    std::thread::scope(|scope| -> PolarsResult<(u64, PathBuf)> {
        for _ in 0..threads {
            let tickets = Arc::clone(&ticket_rx);
            let frames = frame_tx.clone();
            scope.spawn(move || {
                loop {
                    let next = tickets
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .recv();
                    let Ok(chunk) = next else { return };
                    let frame = lineorder_frame(ssb.lineorders(ssb.chunk_orders(chunk)));
                    if frames.send((chunk, frame)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(frame_tx);
        let outcome = (|| {
            let mut batched = None;
            let mut pending = BTreeMap::new();
            let mut rows = 0u64;
            for chunk in 0..chunks {
                let frame = loop {
                    if let Some(frame) = pending.remove(&chunk) {
                        break frame;
                    }
                    let Ok((n, frame)) = frame_rx.recv() else {
                        polars_bail!(ComputeError: "a generator thread stopped");
                    };
                    pending.insert(n, frame);
                };
                let frame: DataFrame = frame?;
                if next_ticket < chunks {
                    let _ = ticket_tx.send(next_ticket);
                    next_ticket += 1;
                }
                if batched.is_none() {
                    batched = Some(
                        writer(fs::File::create(&path)?)
                            .with_row_group_size(Some(frame.height().max(1)))
                            .batched(frame.schema())?,
                    );
                }
                if let Some(w) = batched.as_mut() {
                    w.write_batch(&frame)?;
                }
                rows += frame.height() as u64;
            }
            if let Some(w) = batched {
                w.finish()?;
            }
            Ok((rows, path.clone()))
        })();
        // Whatever happened, let the generator threads run out of tickets and stop.
        drop(ticket_tx);
        drop(frame_rx);
        outcome
    })
}

fn lineorder_frame(rows: Lineorders) -> PolarsResult<DataFrame> {
    let n = rows.len();
    DataFrame::new(
        n,
        vec![
            Column::new("LO_ORDERKEY".into(), rows.orderkey),
            Column::new("LO_LINENUMBER".into(), rows.linenumber),
            Column::new("LO_CUSTKEY".into(), rows.custkey),
            Column::new("LO_PARTKEY".into(), rows.partkey),
            Column::new("LO_SUPPKEY".into(), rows.suppkey),
            Column::new("LO_ORDERDATE".into(), rows.orderdate),
            Column::new("LO_ORDERPRIORITY".into(), rows.orderpriority),
            Column::new("LO_SHIPPRIORITY".into(), rows.shippriority),
            Column::new("LO_QUANTITY".into(), rows.quantity),
            Column::new("LO_EXTENDEDPRICE".into(), rows.extendedprice),
            Column::new("LO_ORDTOTALPRICE".into(), rows.ordtotalprice),
            Column::new("LO_DISCOUNT".into(), rows.discount),
            Column::new("LO_REVENUE".into(), rows.revenue),
            Column::new("LO_SUPPLYCOST".into(), rows.supplycost),
            Column::new("LO_TAX".into(), rows.tax),
            Column::new("LO_COMMITDATE".into(), rows.commitdate),
            Column::new("LO_SHIPMODE".into(), rows.shipmode),
        ],
    )
}

/// Builds a column from one field of each row.
fn col<R, T>(name: &str, rows: &[R], f: impl Fn(&R) -> T) -> Column
where
    Series: NamedFrom<Vec<T>, [T]>,
{
    Column::new(name.into(), rows.iter().map(f).collect::<Vec<T>>())
}

fn customer_frame(ssb: &Ssb) -> PolarsResult<DataFrame> {
    let rows = ssb.customers();
    DataFrame::new(
        rows.len(),
        vec![
            col("C_CUSTKEY", &rows, |r| r.key),
            col("C_NAME", &rows, |r| r.name.clone()),
            col("C_ADDRESS", &rows, |r| r.address.clone()),
            col("C_CITY", &rows, |r| r.city.clone()),
            col("C_NATION", &rows, |r| r.nation),
            col("C_REGION", &rows, |r| r.region),
            col("C_PHONE", &rows, |r| r.phone.clone()),
            col("C_MKTSEGMENT", &rows, |r| r.segment),
        ],
    )
}

fn supplier_frame(ssb: &Ssb) -> PolarsResult<DataFrame> {
    let rows = ssb.suppliers();
    DataFrame::new(
        rows.len(),
        vec![
            col("S_SUPPKEY", &rows, |r| r.key),
            col("S_NAME", &rows, |r| r.name.clone()),
            col("S_ADDRESS", &rows, |r| r.address.clone()),
            col("S_CITY", &rows, |r| r.city.clone()),
            col("S_NATION", &rows, |r| r.nation),
            col("S_REGION", &rows, |r| r.region),
            col("S_PHONE", &rows, |r| r.phone.clone()),
        ],
    )
}

fn part_frame(ssb: &Ssb) -> PolarsResult<DataFrame> {
    let rows = ssb.parts();
    DataFrame::new(
        rows.len(),
        vec![
            col("P_PARTKEY", &rows, |r| r.key),
            col("P_NAME", &rows, |r| r.name.clone()),
            col("P_MFGR", &rows, |r| r.mfgr.clone()),
            col("P_CATEGORY", &rows, |r| r.category.clone()),
            col("P_BRAND", &rows, |r| r.brand.clone()),
            col("P_COLOR", &rows, |r| r.color),
            col("P_TYPE", &rows, |r| r.kind.clone()),
            col("P_SIZE", &rows, |r| r.size),
            col("P_CONTAINER", &rows, |r| r.container.clone()),
        ],
    )
}

fn dates_frame() -> PolarsResult<DataFrame> {
    let rows = spool_ssb::dates();
    DataFrame::new(
        rows.len(),
        vec![
            col("D_DATEKEY", &rows, |r| r.datekey),
            col("D_DATE", &rows, |r| r.date.clone()),
            col("D_DAYOFWEEK", &rows, |r| r.dayofweek),
            col("D_MONTH", &rows, |r| r.month),
            col("D_YEAR", &rows, |r| r.year),
            col("D_YEARMONTHNUM", &rows, |r| r.yearmonthnum),
            col("D_YEARMONTH", &rows, |r| r.yearmonth.clone()),
            col("D_DAYNUMINWEEK", &rows, |r| r.daynuminweek),
            col("D_DAYNUMINMONTH", &rows, |r| r.daynuminmonth),
            col("D_DAYNUMINYEAR", &rows, |r| r.daynuminyear),
            col("D_MONTHNUMINYEAR", &rows, |r| r.monthnuminyear),
            col("D_WEEKNUMINYEAR", &rows, |r| r.weeknuminyear),
            col("D_SELLINGSEASON", &rows, |r| r.sellingseason),
            col("D_LASTDAYINWEEKFL", &rows, |r| r.lastdayinweekfl),
            col("D_LASTDAYINMONTHFL", &rows, |r| r.lastdayinmonthfl),
            col("D_HOLIDAYFL", &rows, |r| r.holidayfl),
            col("D_WEEKDAYFL", &rows, |r| r.weekdayfl),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_is_deterministic_whatever_the_thread_count() {
        let root = tempfile::tempdir().expect("tempdir");
        let ssb = Ssb::new(0.05).expect("scale");
        let one = write_ssb_project(&root.path().join("a"), &ssb, 1).expect("write");
        write_ssb_project(&root.path().join("b"), &ssb, 3).expect("write");
        for (table, _, _) in &one.tables {
            let read = |d: &str| fs::read(root.path().join(d).join(format!("{table}.parquet")));
            assert_eq!(read("a").expect("a"), read("b").expect("b"), "{table}");
        }
        let lineorder = &one.tables[0];
        assert_eq!(lineorder.0, "LINEORDER");
        let expected: usize = (0..ssb.chunks())
            .map(|c| ssb.lineorders(ssb.chunk_orders(c)).len())
            .sum();
        assert_eq!(lineorder.1, expected as u64);
        assert!(root.path().join("a/P_LINEORDER.sql").exists());
        assert!(!root.path().join(".a.partial").exists());
        assert!(write_ssb_project(&root.path().join("a"), &ssb, 1).is_err());
    }
}
