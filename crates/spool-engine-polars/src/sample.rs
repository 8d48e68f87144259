//! A small deterministic sample project shaped like Kylin's SSB sample, so a fresh install can
//! run the seed's `select * from p_lineorder` at once.
//!
//! Writes `LINEORDER.parquet` (SSB's columns and value domains, generated from a fixed seed) and
//! the view `P_LINEORDER.sql` (every LINEORDER column plus `V_REVENUE`).

use std::fs;
use std::path::Path;

use polars::prelude::*;

const PRIORITIES: [&str; 5] = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"];
const SHIP_MODES: [&str; 7] = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"];

/// A small, fast, deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

/// Returns the yyyymmdd of the day `days` after 1992-01-01.
fn date_key(days: i64) -> i32 {
    let (mut y, mut d) = (1992i32, days);
    loop {
        let len = if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
            366
        } else {
            365
        };
        if d < len {
            break;
        }
        d -= len;
        y += 1;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let months = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut m = 0;
    while d >= months[m] {
        d -= months[m];
        m += 1;
    }
    y * 10_000 + (m as i32 + 1) * 100 + d as i32 + 1
}

/// Writes the sample project into `dir` with about `orders` orders (1 to 7 lines each).
pub fn write_sample_project(dir: &Path, orders: usize) -> PolarsResult<()> {
    fs::create_dir_all(dir)?;
    let mut rng = Rng(0x5EED_0001);
    let (customers, parts, suppliers) = (30_000i64, 200_000i64, 2_000i64);
    // LO_ORDERKEY, LINENUMBER, QUANTITY, EXTENDEDPRICE, ORDTOTALPRICE, DISCOUNT, REVENUE,
    // SUPPLYCOST, TAX.
    let mut cols: [Vec<i64>; 9] = Default::default();
    let (mut orderdate, mut commitdate, mut custkey, mut partkey, mut suppkey) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut priority, mut shipmode) = (Vec::new(), Vec::new());
    for order in 1..=orders as i64 {
        let lines = rng.range(1, 7);
        let day = rng.range(0, 2_405);
        let cust = rng.range(1, customers) as i32;
        let prio = PRIORITIES[rng.range(0, 4) as usize];
        let mut total = 0;
        let start = cols[0].len();
        for line in 1..=lines {
            let part = rng.range(1, parts);
            let quantity = rng.range(1, 50);
            let price = 90_000 + (part / 10) % 20_001 + 100 * (part % 1_000);
            let extended = quantity * price;
            let discount = rng.range(0, 10);
            let revenue = extended * (100 - discount) / 100;
            total += extended;
            let values = [
                order,
                line,
                quantity,
                extended,
                0,
                discount,
                revenue,
                6 * price / 10,
                rng.range(0, 8),
            ];
            for (c, v) in cols.iter_mut().zip(values) {
                c.push(v);
            }
            orderdate.push(date_key(day));
            commitdate.push(date_key(day + rng.range(30, 90)));
            custkey.push(cust);
            partkey.push(part as i32);
            suppkey.push(rng.range(1, suppliers) as i32);
            priority.push(prio);
            shipmode.push(SHIP_MODES[rng.range(0, 6) as usize]);
        }
        for v in &mut cols[4][start..] {
            *v = total;
        }
    }
    let n = cols[0].len();
    let mut frame = DataFrame::new(
        n,
        vec![
            Column::new("LO_ORDERKEY".into(), &cols[0]),
            Column::new("LO_LINENUMBER".into(), &cols[1]),
            Column::new("LO_CUSTKEY".into(), custkey),
            Column::new("LO_PARTKEY".into(), partkey),
            Column::new("LO_SUPPKEY".into(), suppkey),
            Column::new("LO_ORDERDATE".into(), orderdate),
            Column::new("LO_ORDERPRIORITY".into(), priority),
            Column::new("LO_SHIPPRIORITY".into(), vec![0i32; n]),
            Column::new("LO_QUANTITY".into(), &cols[2]),
            Column::new("LO_EXTENDEDPRICE".into(), &cols[3]),
            Column::new("LO_ORDTOTALPRICE".into(), &cols[4]),
            Column::new("LO_DISCOUNT".into(), &cols[5]),
            Column::new("LO_REVENUE".into(), &cols[6]),
            Column::new("LO_SUPPLYCOST".into(), &cols[7]),
            Column::new("LO_TAX".into(), &cols[8]),
            Column::new("LO_COMMITDATE".into(), commitdate),
            Column::new("LO_SHIPMODE".into(), shipmode),
        ],
    )?;
    let tmp = dir.join(".LINEORDER.parquet.tmp");
    ParquetWriter::new(fs::File::create(&tmp)?).finish(&mut frame)?;
    fs::rename(&tmp, dir.join("LINEORDER.parquet"))?;
    fs::write(
        dir.join("P_LINEORDER.sql"),
        "SELECT *, LO_EXTENDEDPRICE * LO_DISCOUNT AS V_REVENUE FROM LINEORDER\n",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_from_1992() {
        assert_eq!(date_key(0), 19920101);
        assert_eq!(date_key(59), 19920229);
        assert_eq!(date_key(366), 19930101);
        assert_eq!(date_key(2_405), 19980802);
    }

    #[test]
    fn the_sample_is_deterministic() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        write_sample_project(a.path(), 100).expect("write");
        write_sample_project(b.path(), 100).expect("write");
        let read = |d: &Path| fs::read(d.join("LINEORDER.parquet")).expect("read");
        assert_eq!(read(a.path()), read(b.path()));
    }
}
