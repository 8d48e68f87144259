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

/// The fact table filtered by the keys its dimensions' filters keep (join planning, before
/// Polars runs the joins) keeps every row the inner joins keep: NULL keys on both sides,
/// duplicate dimension keys, a filter that keeps no key, one that keeps every key, a dense key
/// range and a scattered key list, each checked against the joins computed here.
#[test]
fn star_joins_filtered_by_their_dimensions_keys_keep_every_joined_row() {
    let server = Server::start("workers = 2\nsample_sf = 0\n");
    let dir = server.data_dir.join("projects/star");
    std::fs::create_dir_all(&dir).expect("project folder");
    // Facts: 4,000 rows, every 97th without a key; keys 1..=45, of which dims has 1..=30.
    let facts: Vec<(Option<i64>, i64, i64)> = (0..4_000)
        .map(|i| ((i % 97 != 0).then_some((i * 7) % 45 + 1), i % 56 + 1, i))
        .collect();
    // Dims: keys 1..=30, key 3 and key 4 twice, and a row without a key.
    let mut dims: Vec<(Option<i64>, String, &str)> = (1..=30)
        .map(|k| (Some(k), format!("n{k}"), if k % 3 == 0 { "a" } else { "b" }))
        .collect();
    dims.push((Some(3), "dup3".into(), "a"));
    dims.push((Some(4), "dup4".into(), "a"));
    dims.push((None, "nokey".into(), "a"));
    // Uniq: keys 1..=30 once each (the folded kind of dimension), and a row without a key.
    let mut uniq: Vec<(Option<i64>, String, &str)> = (1..=30)
        .map(|k| (Some(k), format!("n{k}"), if k % 3 == 0 { "a" } else { "b" }))
        .collect();
    uniq.push((None, "nokey".into(), "a"));
    let days: Vec<(i64, i64)> = (1..=56).map(|d| (d, (d - 1) / 28 + 1)).collect();
    let key = |k: Option<i64>| k.map(|k| k.to_string()).unwrap_or_default();
    let mut text = String::from("k,d,v\n");
    for (k, d, v) in &facts {
        text.push_str(&format!("{},{d},{v}\n", key(*k)));
    }
    std::fs::write(dir.join("facts.csv"), text).expect("facts");
    let mut text = String::from("k,name,grp\n");
    for (k, name, grp) in &dims {
        text.push_str(&format!("{},{name},{grp}\n", key(*k)));
    }
    std::fs::write(dir.join("dims.csv"), text).expect("dims");
    let mut text = String::from("k,name,grp\n");
    for (k, name, grp) in &uniq {
        text.push_str(&format!("{},{name},{grp}\n", key(*k)));
    }
    std::fs::write(dir.join("uniq.csv"), text).expect("uniq");
    let mut text = String::from("d,month\n");
    for (d, month) in &days {
        text.push_str(&format!("{d},{month}\n"));
    }
    std::fs::write(dir.join("days.csv"), text).expect("days");

    // (count, sum of v) of the facts joined to the dims rows `keep` keeps and the days `day`
    // keeps, as an inner join counts them.
    let joined_to = |dims: &[(Option<i64>, String, &str)],
                     keep: &dyn Fn(&str, &str) -> bool,
                     day: &dyn Fn(i64, i64) -> bool| {
        let mut n = 0i64;
        let mut sum = 0i64;
        for (k, d, v) in &facts {
            let Some(k) = k else { continue };
            let matches = dims
                .iter()
                .filter(|(dk, name, grp)| *dk == Some(*k) && keep(name, grp))
                .count() as i64;
            let days_matching = days
                .iter()
                .filter(|(dd, m)| dd == d && day(*dd, *m))
                .count();
            if days_matching == 1 {
                n += matches;
                sum += matches * v;
            }
        }
        (n, sum)
    };
    let joined = |keep: &dyn Fn(&str, &str) -> bool, day: &dyn Fn(i64, i64) -> bool| {
        joined_to(&dims, keep, day)
    };
    let any_day = |_: i64, _: i64| true;
    let cases: Vec<(&str, String, (i64, i64))> = vec![
        (
            "duplicate keys, a key list",
            "select count(*) as n, sum(v) as s from facts, dims where facts.k = dims.k \
             and name in ('n3', 'dup3', 'n12', 'nokey')"
                .into(),
            joined(
                &|name, _| ["n3", "dup3", "n12", "nokey"].contains(&name),
                &any_day,
            ),
        ),
        (
            "too many keys to list",
            "select count(*) as n, sum(v) as s from facts, dims where facts.k = dims.k \
             and grp = 'a'"
                .into(),
            joined(&|_, grp| grp == "a", &any_day),
        ),
        (
            "no key kept",
            "select count(*) as n, sum(v) as s from facts, dims where facts.k = dims.k \
             and grp = 'none'"
                .into(),
            (0, 0),
        ),
        (
            "every key kept",
            "select count(*) as n, sum(v) as s from facts, dims where facts.k = dims.k \
             and name <> 'zzz'"
                .into(),
            joined(&|_, _| true, &any_day),
        ),
        (
            "a dense range and a list",
            "select count(*) as n, sum(v) as s from days, facts, dims \
             where facts.k = dims.k and facts.d = days.d and name in ('n4', 'dup4') \
             and days.d between 5 and 9"
                .into(),
            joined(&|name, _| name == "n4" || name == "dup4", &|d, _| {
                (5..=9).contains(&d)
            }),
        ),
        (
            "a range of another column",
            "select count(*) as n, sum(v) as s from facts, days, dims \
             where facts.k = dims.k and facts.d = days.d and month = 2 and name like 'dup%'"
                .into(),
            joined(&|name, _| name.starts_with("dup"), &|_, m| m == 2),
        ),
    ];
    // The same joins with a dimension whose keys are unique: folded into the fact table as a
    // lookup (fact rows with a NULL key or a key the dimension lacks are dropped).
    let cases = cases.into_iter().chain([
        (
            "folded, a group of keys",
            "select count(*) as n, sum(v) as s from facts, uniq where facts.k = uniq.k \
             and grp = 'a'"
                .into(),
            joined_to(&uniq, &|_, grp| grp == "a", &any_day),
        ),
        (
            "folded, every key",
            "select count(*) as n, sum(v) as s from facts, uniq where facts.k = uniq.k".into(),
            joined_to(&uniq, &|_, _| true, &any_day),
        ),
        (
            "folded, no key",
            "select count(*) as n, sum(v) as s from facts, uniq where facts.k = uniq.k \
             and grp = 'none'"
                .into(),
            (0, 0),
        ),
        (
            "folded, two dimensions",
            "select count(*) as n, sum(v) as s from days, facts, uniq u \
             where facts.k = u.k and facts.d = days.d and month = 2 and u.name like 'n1%'"
                .into(),
            joined_to(&uniq, &|name, _| name.starts_with("n1"), &|_, m| m == 2),
        ),
    ]);
    for (case, sql, (n, sum)) in cases {
        let csv = server.run(&sql, "star");
        let row = csv.lines().next().unwrap_or_default().to_owned();
        let expected = if n == 0 {
            // sum() over no rows is NULL: an empty field.
            "0,".to_owned()
        } else {
            format!("{n},{sum}")
        };
        assert_eq!(row, expected, "{case}: {sql}\n{csv}");
    }
    // A folded dimension's columns, grouped, qualified and in ORDER BY, as the joins give them.
    let mut groups: std::collections::BTreeMap<(i64, String), (i64, i64)> = Default::default();
    for (k, d, v) in &facts {
        let found = uniq.iter().find(|(uk, _, _)| uk.is_some() && uk == k);
        let month = days.iter().find(|(dd, _)| dd == d).map(|(_, m)| *m);
        if let (Some((_, _, grp)), Some(month)) = (found, month) {
            let entry = groups.entry((month, (*grp).to_owned())).or_default();
            entry.0 += 1;
            entry.1 += v;
        }
    }
    let expected: String = groups
        .iter()
        .map(|((month, grp), (n, sum))| format!("{month},{grp},{n},{sum}\n"))
        .collect();
    let sql = "select month, u.grp, count(*) as n, sum(v) as s from facts, uniq u, days \
               where facts.k = u.k and facts.d = days.d group by month, u.grp \
               order by month, grp";
    assert_eq!(server.run(sql, "star"), expected, "{sql}");
}
