//! The SSB sample through the real server: the 13 standard queries and their variants (the
//! `P_LINEORDER` view, explicit joins, CTEs), every row checked against answers computed in
//! plain Rust from the generator's rows (`spool_ssb::answers`), never through Polars.

use spool_ssb::Ssb;
use spool_ssb::answers::{QUERIES, answers, check};

use crate::harness::Server;

/// Large enough that every query but the narrowest returns rows, small enough for debug builds.
const SF: f64 = 0.02;

fn rows_of(csv: &str) -> Vec<Vec<String>> {
    csv.lines()
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
}

/// Rewrites a query's comma join as explicit `JOIN ... ON` (`join` is `join` or `left join`),
/// replacing the join predicates in WHERE with `1 = 1`.
fn explicit_joins(sql: &str, join: &str) -> String {
    let keys = [
        ("dates", "lo_orderdate = d_datekey"),
        ("customer", "lo_custkey = c_custkey"),
        ("supplier", "lo_suppkey = s_suppkey"),
        ("part", "lo_partkey = p_partkey"),
    ];
    let from_start = sql.find("from ").expect("from") + 5;
    let from_end = sql.find("\nwhere").expect("where");
    let tables: Vec<&str> = sql[from_start..from_end].split(", ").collect();
    let mut from = "lineorder".to_owned();
    let mut rest = sql[from_end..].to_owned();
    for (table, predicate) in keys {
        if tables.contains(&table) {
            from.push_str(&format!(" {join} {table} on {predicate}"));
            rest = rest.replace(predicate, "1 = 1");
        }
    }
    format!("{}{from}{rest}", &sql[..from_start])
}

#[test]
fn the_13_ssb_queries_and_their_variants_give_the_right_rows() {
    let server = Server::start(&format!("workers = 2\nsample_sf = {SF}\n"));
    let ssb = Ssb::new(SF).expect("scale");
    let answers = answers(&ssb);
    let non_empty = answers
        .iter()
        .filter(|(_, a)| !a.rows.is_empty() && !a.rows[0][0].is_empty())
        .count();
    assert!(
        non_empty >= 11,
        "only {non_empty} queries have rows at SF {SF}"
    );
    for ((name, sql), (_, answer)) in QUERIES.iter().zip(&answers) {
        let mut variants = vec![
            ("as written", sql.to_string()),
            ("upper case", sql.to_uppercase()),
            ("on P_LINEORDER", sql.replace("lineorder", "p_lineorder")),
            ("qualified SSB.", qualified(sql)),
            ("explicit JOIN", explicit_joins(sql, "join")),
            ("LEFT JOIN", explicit_joins(sql, "left join")),
            (
                "in a WITH",
                format!(
                    "with lo as (select * from lineorder) {}",
                    sql.replace("lineorder", "lo")
                ),
            ),
        ];
        if name.starts_with("q1") {
            variants.push((
                "V_REVENUE",
                sql.replace("lineorder", "p_lineorder")
                    .replace("lo_extendedprice * lo_discount", "v_revenue"),
            ));
        }
        for (variant, text) in variants {
            // Upper-casing also upper-cases string literals; keep those as written.
            let text = if variant == "upper case" {
                restore_literals(sql, &text)
            } else {
                text
            };
            let csv = server.run(&text, "ssb");
            if let Err(e) = check(answer, &rows_of(&csv)) {
                panic!("{name} {variant}: {e}\n{text}");
            }
        }
    }
}

/// Qualifies the FROM list's tables with the project's name, as Kylin clients write them.
fn qualified(sql: &str) -> String {
    let from_start = sql.find("from ").expect("from") + 5;
    let from_end = sql.find("\nwhere").expect("where");
    let tables: Vec<String> = sql[from_start..from_end]
        .split(", ")
        .enumerate()
        .map(|(i, t)| format!("{}.{t}", if i % 2 == 0 { "SSB" } else { "ssb" }))
        .collect();
    format!(
        "{}{}{}",
        &sql[..from_start],
        tables.join(", "),
        &sql[from_end..]
    )
}

/// Puts the string literals of `original` back into its upper-cased copy.
fn restore_literals(original: &str, upper: &str) -> String {
    let mut out = upper.to_owned();
    for literal in original.split('\'').skip(1).step_by(2) {
        out = out.replacen(
            &format!("'{}'", literal.to_uppercase()),
            &format!("'{literal}'"),
            1,
        );
    }
    out
}
