//! The 13 standard SSB queries and their answers computed in plain Rust over the generated rows.
//!
//! The answers are the test oracle for every engine: they never go through SQL, Parquet or
//! Polars, only through the rows of [`Ssb`] and hash lookups of the dimensions.

use std::collections::HashMap;

use crate::{Customer, Date, Lineorders, Part, Ssb, Supplier, dates};

/// The 13 SSB queries as analysts send them (comma joins), by name.
pub const QUERIES: [(&str, &str); 13] = [
    ("q1.1", include_str!("../queries/q1.1.sql")),
    ("q1.2", include_str!("../queries/q1.2.sql")),
    ("q1.3", include_str!("../queries/q1.3.sql")),
    ("q2.1", include_str!("../queries/q2.1.sql")),
    ("q2.2", include_str!("../queries/q2.2.sql")),
    ("q2.3", include_str!("../queries/q2.3.sql")),
    ("q3.1", include_str!("../queries/q3.1.sql")),
    ("q3.2", include_str!("../queries/q3.2.sql")),
    ("q3.3", include_str!("../queries/q3.3.sql")),
    ("q3.4", include_str!("../queries/q3.4.sql")),
    ("q4.1", include_str!("../queries/q4.1.sql")),
    ("q4.2", include_str!("../queries/q4.2.sql")),
    ("q4.3", include_str!("../queries/q4.3.sql")),
];

/// A query's expected result.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The rows in result order, each value as CSV would print it (`""` for NULL).
    pub rows: Vec<Vec<String>>,
    /// The ORDER BY: (column index, descending). Rows equal on these may come in any order.
    pub order_by: Vec<(usize, bool)>,
}

/// One LINEORDER row with its dimension rows.
struct Row<'a> {
    lo: &'a Lineorders,
    i: usize,
    d: &'a Date,
    c: &'a Customer,
    s: &'a Supplier,
    p: &'a Part,
}

impl Row<'_> {
    fn discount(&self) -> i64 {
        self.lo.discount[self.i]
    }
    fn quantity(&self) -> i64 {
        self.lo.quantity[self.i]
    }
    fn revenue(&self) -> i64 {
        self.lo.revenue[self.i]
    }
    fn profit(&self) -> i64 {
        self.lo.revenue[self.i] - self.lo.supplycost[self.i]
    }
    fn price_x_discount(&self) -> i64 {
        self.lo.extendedprice[self.i] * self.lo.discount[self.i]
    }
}

/// How one query groups and sums.
struct Spec {
    filter: fn(&Row) -> bool,
    /// Group keys, in output order around the sum.
    keys: fn(&Row) -> Vec<String>,
    value: fn(&Row) -> i64,
    /// Where the sum goes among the output columns.
    sum_at: usize,
    order_by: Vec<(usize, bool)>,
}

fn year(r: &Row) -> String {
    r.d.year.to_string()
}

fn spec(name: &str) -> Option<Spec> {
    let total = |filter: fn(&Row) -> bool| Spec {
        filter,
        keys: |_| Vec::new(),
        value: |r| r.price_x_discount(),
        sum_at: 0,
        order_by: Vec::new(),
    };
    let q2 = |filter: fn(&Row) -> bool| Spec {
        filter,
        keys: |r| vec![year(r), r.p.brand.clone()],
        value: |r| r.revenue(),
        sum_at: 0,
        order_by: vec![(1, false), (2, false)],
    };
    let q3 = |filter: fn(&Row) -> bool, keys: fn(&Row) -> Vec<String>| Spec {
        filter,
        keys,
        value: |r| r.revenue(),
        sum_at: 3,
        order_by: vec![(2, false), (3, true)],
    };
    Some(match name {
        "q1.1" => {
            total(|r| r.d.year == 1993 && (1..=3).contains(&r.discount()) && r.quantity() < 25)
        }
        "q1.2" => total(|r| {
            r.d.yearmonthnum == 199401
                && (4..=6).contains(&r.discount())
                && (26..=35).contains(&r.quantity())
        }),
        "q1.3" => total(|r| {
            r.d.weeknuminyear == 6
                && r.d.year == 1994
                && (5..=7).contains(&r.discount())
                && (26..=35).contains(&r.quantity())
        }),
        "q2.1" => q2(|r| r.p.category == "MFGR#12" && r.s.region == "AMERICA"),
        "q2.2" => q2(|r| {
            r.p.brand.as_str() >= "MFGR#2221"
                && r.p.brand.as_str() <= "MFGR#2228"
                && r.s.region == "ASIA"
        }),
        "q2.3" => q2(|r| r.p.brand == "MFGR#2239" && r.s.region == "EUROPE"),
        "q3.1" => q3(
            |r| r.c.region == "ASIA" && r.s.region == "ASIA" && (1992..=1997).contains(&r.d.year),
            |r| vec![r.c.nation.to_owned(), r.s.nation.to_owned(), year(r)],
        ),
        "q3.2" => q3(
            |r| {
                r.c.nation == "UNITED STATES"
                    && r.s.nation == "UNITED STATES"
                    && (1992..=1997).contains(&r.d.year)
            },
            |r| vec![r.c.city.clone(), r.s.city.clone(), year(r)],
        ),
        "q3.3" => q3(
            |r| {
                (r.c.city == "UNITED KI1" || r.c.city == "UNITED KI5")
                    && (r.s.city == "UNITED KI1" || r.s.city == "UNITED KI5")
                    && (1992..=1997).contains(&r.d.year)
            },
            |r| vec![r.c.city.clone(), r.s.city.clone(), year(r)],
        ),
        "q3.4" => q3(
            |r| {
                (r.c.city == "UNITED KI1" || r.c.city == "UNITED KI5")
                    && (r.s.city == "UNITED KI1" || r.s.city == "UNITED KI5")
                    && r.d.yearmonth == "Dec1997"
            },
            |r| vec![r.c.city.clone(), r.s.city.clone(), year(r)],
        ),
        "q4.1" => Spec {
            filter: |r| {
                r.c.region == "AMERICA"
                    && r.s.region == "AMERICA"
                    && (r.p.mfgr == "MFGR#1" || r.p.mfgr == "MFGR#2")
            },
            keys: |r| vec![year(r), r.c.nation.to_owned()],
            value: |r| r.profit(),
            sum_at: 2,
            order_by: vec![(0, false), (1, false)],
        },
        "q4.2" => Spec {
            filter: |r| {
                r.c.region == "AMERICA"
                    && r.s.region == "AMERICA"
                    && (r.d.year == 1997 || r.d.year == 1998)
                    && (r.p.mfgr == "MFGR#1" || r.p.mfgr == "MFGR#2")
            },
            keys: |r| vec![year(r), r.s.nation.to_owned(), r.p.category.clone()],
            value: |r| r.profit(),
            sum_at: 3,
            order_by: vec![(0, false), (1, false), (2, false)],
        },
        "q4.3" => Spec {
            filter: |r| {
                r.c.region == "AMERICA"
                    && r.s.nation == "UNITED STATES"
                    && (r.d.year == 1997 || r.d.year == 1998)
                    && r.p.category == "MFGR#14"
            },
            keys: |r| vec![year(r), r.s.city.clone(), r.p.brand.clone()],
            value: |r| r.profit(),
            sum_at: 3,
            order_by: vec![(0, false), (1, false), (2, false)],
        },
        _ => return None,
    })
}

/// Computes the answers of all 13 queries for `ssb` in one pass over LINEORDER.
pub fn answers(ssb: &Ssb) -> Vec<(&'static str, Answer)> {
    let specs: Vec<(&str, Spec)> = QUERIES
        .iter()
        .filter_map(|(name, _)| spec(name).map(|s| (*name, s)))
        .collect();
    let dates = dates();
    let by_key: HashMap<i32, &Date> = dates.iter().map(|d| (d.datekey, d)).collect();
    let (customers, suppliers, parts) = (ssb.customers(), ssb.suppliers(), ssb.parts());
    let mut sums: Vec<HashMap<Vec<String>, i64>> = vec![HashMap::new(); specs.len()];
    for chunk in 0..ssb.chunks() {
        let lo = ssb.lineorders(ssb.chunk_orders(chunk));
        for i in 0..lo.len() {
            let Some(d) = by_key.get(&lo.orderdate[i]) else {
                continue;
            };
            let row = Row {
                lo: &lo,
                i,
                d,
                c: &customers[lo.custkey[i] as usize - 1],
                s: &suppliers[lo.suppkey[i] as usize - 1],
                p: &parts[lo.partkey[i] as usize - 1],
            };
            for ((_, spec), sums) in specs.iter().zip(&mut sums) {
                if (spec.filter)(&row) {
                    *sums.entry((spec.keys)(&row)).or_default() += (spec.value)(&row);
                }
            }
        }
    }
    specs
        .into_iter()
        .zip(sums)
        .map(|((name, spec), sums)| {
            let mut rows: Vec<Vec<String>> = sums
                .into_iter()
                .map(|(mut keys, sum)| {
                    keys.insert(spec.sum_at, sum.to_string());
                    keys
                })
                .collect();
            // A total over no rows is one NULL, as SQL has it.
            if rows.is_empty() && spec.order_by.is_empty() {
                rows.push(vec![String::new()]);
            }
            sort_rows(&mut rows, &spec.order_by);
            (
                name,
                Answer {
                    rows,
                    order_by: spec.order_by,
                },
            )
        })
        .collect()
}

/// Compares two values as numbers when both are integers, else as text.
pub fn compare_values(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Sorts rows by `order_by`, then by every column so the result is canonical.
pub fn sort_rows(rows: &mut [Vec<String>], order_by: &[(usize, bool)]) {
    rows.sort_by(|a, b| {
        order_by
            .iter()
            .map(|&(i, desc)| {
                let o = compare_values(&a[i], &b[i]);
                if desc { o.reverse() } else { o }
            })
            .chain((0..a.len()).map(|i| compare_values(&a[i], &b[i])))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// Checks `actual` rows against `expected`: same rows, and in the order the query asks for.
pub fn check(expected: &Answer, actual: &[Vec<String>]) -> Result<(), String> {
    for pair in actual.windows(2) {
        for &(i, desc) in &expected.order_by {
            let o = compare_values(&pair[0][i], &pair[1][i]);
            let o = if desc { o.reverse() } else { o };
            match o {
                std::cmp::Ordering::Less => break,
                std::cmp::Ordering::Equal => continue,
                std::cmp::Ordering::Greater => {
                    return Err(format!(
                        "rows out of order: {:?} before {:?}",
                        pair[0], pair[1]
                    ));
                }
            }
        }
    }
    let mut sorted = actual.to_vec();
    sort_rows(&mut sorted, &expected.order_by);
    if sorted != expected.rows {
        let first_difference = sorted
            .iter()
            .zip(&expected.rows)
            .position(|(a, e)| a != e)
            .unwrap_or(sorted.len().min(expected.rows.len()));
        return Err(format!(
            "{} rows, expected {}; first difference at row {first_difference}: got {:?}, expected {:?}",
            sorted.len(),
            expected.rows.len(),
            sorted.get(first_difference),
            expected.rows.get(first_difference)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_has_an_answer_and_most_are_not_empty() {
        let ssb = Ssb::new(0.02).expect("scale");
        let answers = answers(&ssb);
        assert_eq!(answers.len(), 13);
        let empty: Vec<&str> = answers
            .iter()
            .filter(|(_, a)| a.rows.is_empty() || a.rows[0][0].is_empty())
            .map(|(n, _)| *n)
            .collect();
        assert!(empty.len() <= 3, "empty answers: {empty:?}");
    }

    #[test]
    fn check_accepts_ties_in_any_order_and_rejects_disorder() {
        let expected = Answer {
            rows: vec![
                vec!["1".into(), "8".into()],
                vec!["1".into(), "9".into()],
                vec!["2".into(), "7".into()],
            ],
            order_by: vec![(0, false)],
        };
        let mut swapped = expected.rows.clone();
        swapped.swap(0, 1);
        assert_eq!(check(&expected, &swapped), Ok(()));
        let mut disorder = expected.rows.clone();
        disorder.swap(0, 2);
        assert!(check(&expected, &disorder).is_err());
        assert!(check(&expected, &expected.rows[..2]).is_err());
    }
}
