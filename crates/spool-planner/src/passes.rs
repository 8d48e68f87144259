//! Passes over a bound plan: each keeps the plan's answer and changes how it is computed.
//!
//! - [`join_conditions`]: comma-separated FROM items (cross joins under a WHERE, as SSB and
//!   BI tools write star joins) become inner joins on the WHERE's equalities between them: the
//!   item most equalities link (a star's fact table) first, then each item as soon as an
//!   equality links it to those joined; a condition reading one item filters that item, and
//!   conditions that link nothing stay in the WHERE. Without it, every comma join would be a
//!   cross product.
//! - The star-join levers, inside the same pass when the engine gives [`Statistics`] and
//!   [`PlannerOptions`] allow them: a filtered dimension much smaller than the fact table is
//!   asked what its filters keep of the key the fact joins it on ([`KeyFacts`]), and
//!   - **key filters**: the fact table is filtered by those keys before any join (a key range
//!     when narrow, else the keys as a set, [`ExprKind::InKeys`]), so its scan skips the rows
//!     and row groups no dimension row would join;
//!   - **join order**: the dimensions are joined most selective first, so later joins see
//!     fewer fact rows;
//!   - **folds**: a join with a much smaller dimension on its integer key is marked
//!     [`JoinStrategy::Lookup`], for the engine to find each fact row's dimension row in an
//!     array by key rather than by hashing (it hashes when the key is not unique).
//!
//!   The filters are implied by the inner joins (a fact row outside a dimension's kept keys finds no
//!   partner), so the answer is the same with any lever on or off; the differential tests
//!   check it.

use crate::plan::{Binary, Expr, ExprKind, Field, JoinKind, JoinStrategy, Literal, Plan};
use crate::types::SqlType;

/// Which levers the passes may pull (each on by default; off to measure it or rule it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannerOptions {
    /// Filter a star's fact table by the keys its filtered dimensions keep.
    pub key_filters: bool,
    /// Join a star's most selective dimension first.
    pub join_order: bool,
    /// Let the engine find a much smaller dimension's row by its key in an array rather than
    /// by a hash join ([`JoinStrategy::Lookup`]).
    pub folds: bool,
}

impl Default for PlannerOptions {
    fn default() -> Self {
        Self {
            key_filters: true,
            join_order: true,
            folds: true,
        }
    }
}

impl PlannerOptions {
    /// Every lever off: the plan as bound, with comma joins made inner joins.
    pub fn none() -> Self {
        Self {
            key_filters: false,
            join_order: false,
            folds: false,
        }
    }
}

/// What a dimension's filters keep of the integer key it joins the fact table on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// Rows the filters keep.
    pub kept: u64,
    /// Rows of the whole dimension.
    pub rows: u64,
    /// The smallest and largest key kept (`None`: no row with a key is kept).
    pub range: Option<(i64, i64)>,
    /// The smallest and largest key of the whole dimension.
    pub full: Option<(i64, i64)>,
    /// The distinct keys kept, ascending, when there are at most [`MAX_KEY_SET`].
    pub values: Option<Vec<i64>>,
}

/// Facts about the data the star-join levers need, given by the engine that will run the
/// plan (it may run small queries to find them, and cache them).
pub trait Statistics {
    /// The rows of `plan` (a table's scan), when known cheaply.
    fn rows(&self, plan: &Plan) -> Option<u64>;
    /// What `kept` (a dimension's scan under its filters) keeps of its integer column `key`,
    /// with `whole` (the same scan unfiltered) for the whole dimension's rows and key range.
    fn keys(&self, kept: &Plan, whole: &Plan, key: usize) -> Option<KeyFacts>;
}

/// No statistics: the levers stay off.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStatistics;

impl Statistics for NoStatistics {
    fn rows(&self, _: &Plan) -> Option<u64> {
        None
    }

    fn keys(&self, _: &Plan, _: &Plan, _: usize) -> Option<KeyFacts> {
        None
    }
}

/// A dimension is asked about its keys only when the fact table has at least this many times
/// its rows: asking is then cheap next to the join it orders.
const COUNT_MIN_RATIO: u64 = 4;

/// The most distinct keys a key set may hold (the engine tests a set's membership at a cost
/// per fact row that does not grow with the keys).
pub const MAX_KEY_SET: usize = 65_536;

/// Keys filter the fact table only when the dimension's filters keep at most this share of
/// its rows ...
const MAX_LISTED_SHARE: f64 = 0.25;

/// ... and, past [`MAX_SMALL_SET`] keys, at most this share: a set that keeps a fifth of the
/// keys (SSB's `c_region` at SF 10, 60,000 keys) made Q3.1 13 % and Q4.1 7 % slower, one that
/// keeps 4 % (`p_category`) made Q2.1 and Q4.3 faster (docs/PERFORMANCE.md).
const MAX_KEYED_SHARE: f64 = 0.1;

/// See [`MAX_KEYED_SHARE`].
const MAX_SMALL_SET: usize = 4_096;

/// A key range filters the fact table only when it spans at most this share of the
/// dimension's whole key range.
const MAX_RANGE_SHARE: f64 = 0.5;

/// Rows per Parquet row group assumed when choosing key filters: writers use 100,000 to
/// 1,000,000 (SSB's files 200,000).
const ROW_GROUP_ROWS: f64 = 200_000.0;

/// Runs every pass with every lever off.
pub fn optimize(plan: Plan) -> Plan {
    optimize_with(plan, PlannerOptions::none(), &NoStatistics)
}

/// Runs every pass, with the levers `options` allows and the facts `statistics` gives.
pub fn optimize_with(plan: Plan, options: PlannerOptions, statistics: &dyn Statistics) -> Plan {
    let star = Star {
        options,
        statistics,
    };
    join_conditions_with(plan, &star)
}

/// The star-join levers allowed and the facts they use.
struct Star<'a> {
    options: PlannerOptions,
    statistics: &'a dyn Statistics,
}

/// See the module docs (every lever off).
pub fn join_conditions(plan: Plan) -> Plan {
    optimize(plan)
}

fn join_conditions_with(plan: Plan, star: &Star<'_>) -> Plan {
    map_children(
        plan,
        &|child| join_conditions_with(child, star),
        |plan| match plan {
            Plan::Filter { input, predicate } if is_cross(&input) => link(*input, predicate, star),
            other => other,
        },
    )
}

/// Applies `pass` to each child of `plan`, then `here` to `plan` itself.
fn map_children(plan: Plan, pass: &dyn Fn(Plan) -> Plan, here: impl Fn(Plan) -> Plan) -> Plan {
    let plan = match plan {
        Plan::Filter { input, predicate } => Plan::Filter {
            input: Box::new(pass(*input)),
            predicate,
        },
        Plan::Project {
            input,
            exprs,
            fields,
        } => Plan::Project {
            input: Box::new(pass(*input)),
            exprs,
            fields,
        },
        Plan::Aggregate {
            input,
            groups,
            aggregates,
            fields,
        } => Plan::Aggregate {
            input: Box::new(pass(*input)),
            groups,
            aggregates,
            fields,
        },
        Plan::Join {
            left,
            right,
            kind,
            on,
            strategy,
            fields,
        } => Plan::Join {
            left: Box::new(pass(*left)),
            right: Box::new(pass(*right)),
            kind,
            on,
            strategy,
            fields,
        },
        Plan::Sort { input, keys } => Plan::Sort {
            input: Box::new(pass(*input)),
            keys,
        },
        Plan::Limit {
            input,
            offset,
            fetch,
        } => Plan::Limit {
            input: Box::new(pass(*input)),
            offset,
            fetch,
        },
        Plan::Distinct { input } => Plan::Distinct {
            input: Box::new(pass(*input)),
        },
        Plan::Window {
            input,
            windows,
            fields,
        } => Plan::Window {
            input: Box::new(pass(*input)),
            windows,
            fields,
        },
        Plan::Union { inputs, fields } => Plan::Union {
            inputs: inputs.into_iter().map(pass).collect(),
            fields,
        },
        leaf @ (Plan::Scan { .. } | Plan::Single) => leaf,
    };
    here(plan)
}

fn is_cross(plan: &Plan) -> bool {
    matches!(
        plan,
        Plan::Join {
            kind: JoinKind::Cross,
            ..
        }
    )
}

/// The items of a tree of cross joins, left to right.
fn items(plan: Plan, out: &mut Vec<Plan>) {
    match plan {
        Plan::Join {
            left,
            right,
            kind: JoinKind::Cross,
            on: None,
            ..
        } => {
            items(*left, out);
            items(*right, out);
        }
        other => out.push(other),
    }
}

fn conjuncts(e: Expr, out: &mut Vec<Expr>) {
    match e.kind {
        ExprKind::Binary(Binary::And, l, r) => {
            conjuncts(*l, out);
            conjuncts(*r, out);
        }
        kind => out.push(Expr { kind, ..e }),
    }
}

fn and(l: Expr, r: Expr) -> Expr {
    Expr {
        ty: crate::SqlType::Boolean,
        nullable: l.nullable || r.nullable,
        kind: ExprKind::Binary(Binary::And, Box::new(l), Box::new(r)),
    }
}

/// Rebuilds the cross joins under `predicate` as inner joins on its equalities (see the module
/// docs), with the star-join levers `star` allows.
fn link(cross: Plan, predicate: Expr, star: &Star<'_>) -> Plan {
    let original_fields: Vec<Field> = cross.fields().to_vec();
    let mut leaves = Vec::new();
    items(cross, &mut leaves);
    // Each item's columns in the original (FROM order) numbering.
    let mut starts = Vec::with_capacity(leaves.len());
    let mut at = 0;
    for leaf in &leaves {
        starts.push(at);
        at += leaf.fields().len();
    }
    let item_of = |column: usize| starts.iter().rposition(|&s| s <= column).unwrap_or(0);
    let mut parts = Vec::new();
    conjuncts(predicate, &mut parts);
    // Which items each conjunct reads.
    let reads: Vec<Vec<usize>> = parts
        .iter()
        .map(|p| {
            let mut items: Vec<usize> = p.columns().into_iter().map(item_of).collect();
            items.sort_unstable();
            items.dedup();
            items
        })
        .collect();
    let is_link = |p: &Expr, items: &[usize]| {
        items.len() == 2 && matches!(p.kind, ExprKind::Binary(Binary::Eq, _, _))
    };
    let mut used = vec![false; parts.len()];

    // A condition on one item filters that item, in the item's own numbering.
    let wholes: Vec<Plan> = leaves.clone();
    let mut own = vec![0usize; leaves.len()];
    for (i, (p, items)) in parts.iter().zip(&reads).enumerate() {
        if let [item] = items.as_slice() {
            used[i] = true;
            own[*item] += 1;
            let local = p.clone().remap(&|c| c - starts[*item]);
            leaves[*item] = filtered(std::mem::replace(&mut leaves[*item], Plan::Single), local);
        }
    }

    // Items in join order: the centre of the star first (the item most equalities link to
    // others: a fact table, which then probes each dimension's hash table), then each next
    // one linked to those joined: the most selective (with join order on), else in FROM order.
    let links = |item: usize| {
        parts
            .iter()
            .zip(&reads)
            .filter(|(p, items)| is_link(p, items) && items.contains(&item))
            .count()
    };
    let centre = (0..leaves.len())
        .max_by_key(|&item| (links(item), std::cmp::Reverse(item)))
        .unwrap_or(0);

    // What each filtered dimension keeps (1: not asked), and the fact filters it implies.
    let mut share = vec![1.0f64; leaves.len()];
    let mut fact_filters: Vec<KeyFilter> = Vec::new();
    let levers = star.options.key_filters || star.options.join_order || star.options.folds;
    let fact_rows = if levers && matches!(wholes[centre], Plan::Scan { .. }) {
        star.statistics.rows(&wholes[centre])
    } else {
        None
    };
    // Each dimension's integer key equality with the centre, when it is the only condition
    // linking the dimension: the fact's column (in FROM numbering) and the dimension's own.
    let mut fold_key: Vec<Option<(usize, usize)>> = vec![None; leaves.len()];
    if let Some(fact_rows) = fact_rows {
        for item in (0..leaves.len()).filter(|&i| i != centre) {
            if !matches!(wholes[item], Plan::Scan { .. }) {
                continue;
            }
            let mut touching = parts
                .iter()
                .zip(&reads)
                .filter(|(p, items)| is_link(p, items) && items.contains(&item));
            let (Some((p, items)), None) = (touching.next(), touching.next()) else {
                continue;
            };
            if !items.contains(&centre) {
                continue;
            }
            let ExprKind::Binary(Binary::Eq, l, r) = &p.kind else {
                continue;
            };
            let (Some(l), Some(r)) = (integer_column(l), integer_column(r)) else {
                continue;
            };
            let (fact, dimension) = if item_of(l.0) == centre {
                (l, r)
            } else {
                (r, l)
            };
            let (fact_column, fact_type) = (fact.0 - starts[centre], fact.1);
            let dimension_key = dimension.0 - starts[item];
            let small = |rows: u64| rows > 0 && rows.saturating_mul(COUNT_MIN_RATIO) <= fact_rows;
            if star.options.folds && star.statistics.rows(&wholes[item]).is_some_and(small) {
                fold_key[item] = Some((fact.0, dimension_key));
            }
            if own[item] == 0 || !(star.options.key_filters || star.options.join_order) {
                continue;
            }
            let Some(facts) = star
                .statistics
                .keys(&leaves[item], &wholes[item], dimension_key)
                .filter(|f| small(f.rows))
            else {
                continue;
            };
            share[item] = facts.kept as f64 / facts.rows as f64;
            if star.options.key_filters {
                fact_filters.extend(key_filter(fact_column, fact_type, &facts));
            }
        }
    }
    let fact_filters = choose_key_filters(fact_filters);
    if let Some(condition) = fact_filters.into_iter().map(|f| f.condition).reduce(and) {
        leaves[centre] = filtered(
            std::mem::replace(&mut leaves[centre], Plan::Single),
            condition,
        );
    }

    let mut order = vec![centre];
    let mut remaining: Vec<usize> = (0..leaves.len()).filter(|&i| i != centre).collect();
    while !remaining.is_empty() {
        let linked = |candidate: usize| {
            parts.iter().zip(&reads).any(|(p, items)| {
                is_link(p, items)
                    && items.contains(&candidate)
                    && items.iter().any(|i| order.contains(i))
            })
        };
        let mut candidates = (0..remaining.len()).filter(|&k| linked(remaining[k]));
        let next = if star.options.join_order {
            candidates.min_by(|&a, &b| {
                share[remaining[a]]
                    .total_cmp(&share[remaining[b]])
                    .then(a.cmp(&b))
            })
        } else {
            candidates.next()
        };
        let next = remaining.remove(next.unwrap_or(0));
        order.push(next);
    }

    // The new numbering: items in join order, each item's columns together.
    let mut new_start = vec![0usize; leaves.len()];
    let mut at = 0;
    for &item in &order {
        new_start[item] = at;
        at += leaves[item].fields().len();
    }
    let to_new = |column: usize| {
        let item = item_of(column);
        new_start[item] + (column - starts[item])
    };

    let mut leaves: Vec<Option<Plan>> = leaves.into_iter().map(Some).collect();
    let mut joined = leaves[order[0]].take().unwrap_or(Plan::Single);
    let mut joined_items = vec![order[0]];
    for &item in &order[1..] {
        let right = leaves[item].take().unwrap_or(Plan::Single);
        joined_items.push(item);
        let mut on: Option<Expr> = None;
        let mut conditions = 0;
        for (i, (p, items)) in parts.iter().zip(&reads).enumerate() {
            if !used[i] && is_link(p, items) && items.iter().all(|x| joined_items.contains(x)) {
                used[i] = true;
                conditions += 1;
                let p = p.clone().remap(&to_new);
                on = Some(match on {
                    None => p,
                    Some(o) => and(o, p),
                });
            }
        }
        let strategy = match fold_key[item] {
            Some((fact, dimension)) if conditions == 1 => JoinStrategy::Lookup {
                left: to_new(fact),
                right: dimension,
            },
            _ => JoinStrategy::Hash,
        };
        let mut fields = joined.fields().to_vec();
        fields.extend(right.fields().iter().cloned());
        joined = Plan::Join {
            left: Box::new(joined),
            right: Box::new(right),
            kind: if on.is_some() {
                JoinKind::Inner
            } else {
                JoinKind::Cross
            },
            on,
            strategy,
            fields,
        };
    }
    // What links nothing stays a filter, over the new numbering.
    let rest = parts
        .into_iter()
        .zip(used)
        .filter(|(_, used)| !used)
        .map(|(p, _)| p.remap(&to_new))
        .reduce(and);
    if let Some(predicate) = rest {
        joined = Plan::Filter {
            input: Box::new(joined),
            predicate,
        };
    }
    // The columns back in FROM order, as every expression above reads them.
    let joined_fields = joined.fields().to_vec();
    let exprs = (0..original_fields.len())
        .map(|c| Expr::column(to_new(c), &joined_fields[to_new(c)]))
        .collect();
    Plan::Project {
        input: Box::new(joined),
        exprs,
        fields: original_fields,
    }
}

/// `plan` under one more condition.
fn filtered(plan: Plan, condition: Expr) -> Plan {
    match plan {
        Plan::Filter { input, predicate } => Plan::Filter {
            input,
            predicate: and(predicate, condition),
        },
        other => Plan::Filter {
            input: Box::new(other),
            predicate: condition,
        },
    }
}

/// The position and type of an integer column reference.
fn integer_column(e: &Expr) -> Option<(usize, SqlType)> {
    match &e.kind {
        ExprKind::Column(i) if e.ty.is_integer() => Some((*i, e.ty)),
        _ => None,
    }
}

/// A condition on the fact table implied by a dimension's kept keys.
#[derive(Debug)]
struct KeyFilter {
    /// The share of fact rows it is expected to keep.
    share: f64,
    /// The condition, over the fact table's own columns.
    condition: Expr,
    /// Whether it tests a set of keys (else a range, or no row at all).
    set: bool,
}

/// An integer literal of `ty` when `v` fits it, else of BIGINT.
fn integer(v: i64, ty: SqlType) -> Expr {
    let fits = match ty {
        SqlType::TinyInt => i8::try_from(v).is_ok(),
        SqlType::SmallInt => i16::try_from(v).is_ok(),
        SqlType::Integer => i32::try_from(v).is_ok(),
        _ => true,
    };
    Expr {
        kind: ExprKind::Literal(Literal::Integer(v)),
        ty: if fits { ty } else { SqlType::BigInt },
        nullable: false,
    }
}

fn compare(op: Binary, l: Expr, r: Expr) -> Expr {
    Expr {
        nullable: l.nullable || r.nullable,
        ty: SqlType::Boolean,
        kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
    }
}

/// The condition on the fact table's `column` that the keys a dimension keeps imply for an
/// inner join on it (nothing is lost: a fact row outside it finds no dimension row): no row
/// when the dimension keeps no key; else the kept keys' range when it is narrow against the
/// dimension's whole range and not much looser than the keys themselves; else the keys
/// themselves when few and selective. Its share is what the dimension keeps of its rows (fact
/// rows spread evenly over the keys), or the range's share of the whole range if larger.
fn key_filter(column: usize, ty: SqlType, facts: &KeyFacts) -> Option<KeyFilter> {
    let reference = || Expr {
        kind: ExprKind::Column(column),
        ty,
        nullable: true,
    };
    let Some((low, high)) = facts.range else {
        // No key kept: the inner join keeps no fact row either.
        return Some(KeyFilter {
            share: 0.0,
            condition: Expr {
                kind: ExprKind::Literal(Literal::Boolean(false)),
                ty: SqlType::Boolean,
                nullable: false,
            },
            set: false,
        });
    };
    let kept = facts.kept as f64 / facts.rows.max(1) as f64;
    let span_share = facts.full.and_then(|(full_low, full_high)| {
        let full = (full_high as f64) - (full_low as f64);
        (full > 0.0).then(|| ((high as f64) - (low as f64)) / full)
    });
    let listed = facts.values.as_ref().filter(|values| {
        !values.is_empty()
            && values.len() <= MAX_KEY_SET
            && kept <= MAX_LISTED_SHARE
            && (values.len() <= MAX_SMALL_SET || kept <= MAX_KEYED_SHARE)
    });
    match span_share {
        // A range is cheaper to test than a set: taken unless the set keeps far fewer rows.
        Some(span) if span <= MAX_RANGE_SHARE && (listed.is_none() || span <= 2.0 * kept) => {
            Some(KeyFilter {
                share: kept.max(span),
                condition: and(
                    compare(Binary::GtEq, reference(), integer(low, ty)),
                    compare(Binary::LtEq, reference(), integer(high, ty)),
                ),
                set: false,
            })
        }
        _ => listed.map(|values| KeyFilter {
            share: kept,
            condition: Expr {
                kind: ExprKind::InKeys {
                    expr: Box::new(reference()),
                    keys: values.as_slice().into(),
                },
                ty: SqlType::Boolean,
                nullable: true,
            },
            set: true,
        }),
    }
}

/// Which key filters to write into the fact table's scan: every key range (cheap to test), the
/// most selective key set, and more sets only where together they leave most row groups
/// without a row. A scan decodes every column a filter reads in full and the other columns of
/// every row group where a row is left; a second set costs a test per fact row and pays only by
/// emptying row groups (measured on SSB at SF 1: Q3.3's two city lists 58 ms, one 52 ms; Q2.2's
/// part and supplier lists 83 ms, the part list 74 ms; Q3.4's two lists and its month range,
/// which leave almost no row group with a row, 42 ms, one list and the range 54 ms).
fn choose_key_filters(filters: Vec<KeyFilter>) -> Vec<KeyFilter> {
    let (mut sets, ranges): (Vec<KeyFilter>, Vec<KeyFilter>) =
        filters.into_iter().partition(|f| f.set);
    sets.sort_by(|a, b| a.share.total_cmp(&b.share));
    let mut left = ranges.iter().fold(ROW_GROUP_ROWS, |left, f| left * f.share);
    let mut taken = 0;
    for (i, set) in sets.iter().enumerate() {
        left *= set.share;
        if left < 1.0 {
            taken = i + 1;
            break;
        }
    }
    ranges
        .into_iter()
        .chain(sets.into_iter().take(taken.max(1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::catalog::{Catalog, Column, Table};
    use crate::plan::Plan;
    use crate::types::SqlType;

    fn catalog() -> Catalog {
        let mut c = Catalog::new("SSB");
        for (name, columns) in [
            ("DATES", vec!["D_DATEKEY", "D_YEAR"]),
            (
                "LINEORDER",
                vec!["LO_ORDERDATE", "LO_CUSTKEY", "LO_REVENUE"],
            ),
            ("CUSTOMER", vec!["C_CUSTKEY", "C_REGION"]),
        ] {
            c.add(Table {
                schema: "SSB".to_owned(),
                name: name.to_owned(),
                columns: columns
                    .into_iter()
                    .map(|n| Column::new(n, SqlType::Integer))
                    .collect(),
                rows: None,
            });
        }
        c
    }

    #[test]
    fn comma_joins_become_inner_joins_on_the_wheres_equalities() {
        // SSB's Q4 writes a dimension first: the fact table, linked to both dimensions, is
        // joined first all the same, then the dimensions in FROM order.
        let sql = "select d_year, sum(lo_revenue) from dates, customer, lineorder \
                   where lo_custkey = c_custkey and lo_orderdate = d_datekey and c_region = 1 \
                   group by d_year";
        let plan = super::optimize(crate::bind_query(sql, &catalog()).expect("plan"));
        let explained = plan.explain();
        // LINEORDER #0-2, DATES #3-4, CUSTOMER #5-6 in join order; FROM order restored above;
        // the region's condition filters CUSTOMER.
        let expected = "\
Project #0 AS D_YEAR, #1 AS EXPR$1
  Aggregate by [#1] computing [Sum(#6): BIGINT]
    Project #3 AS D_DATEKEY, #4 AS D_YEAR, #5 AS C_CUSTKEY, #6 AS C_REGION, #0 AS LO_ORDERDATE, #1 AS LO_CUSTKEY, #2 AS LO_REVENUE
      Join Inner on (#1 = #5)
        Join Inner on (#0 = #3)
          Scan SSB.LINEORDER
          Scan SSB.DATES
        Filter (#1 = Integer(1))
          Scan SSB.CUSTOMER
";
        assert_eq!(explained, expected);
        // Items that nothing links stay a cross join.
        let plan = super::optimize(
            crate::bind_query("select 1 from dates, customer where d_year = 1", &catalog())
                .expect("plan"),
        );
        assert!(plan.explain().contains("Join Cross"), "{}", plan.explain());
    }

    /// Facts made up for the tests: LINEORDER 1,000 rows; CUSTOMER keeps 10 of its 100 rows,
    /// keys 1..=10 of 1..=100; DATES keeps 5 of its 10 rows, keys 3..=7 of 1..=10.
    struct Facts;

    impl super::Statistics for Facts {
        fn rows(&self, plan: &Plan) -> Option<u64> {
            match plan {
                Plan::Scan { table, .. } if table == "LINEORDER" => Some(1_000),
                _ => None,
            }
        }

        fn keys(&self, kept: &Plan, whole: &Plan, key: usize) -> Option<super::KeyFacts> {
            let (Plan::Filter { .. }, Plan::Scan { table, .. }) = (kept, whole) else {
                return None;
            };
            assert_eq!(key, 0, "{table}: the key is its first column");
            Some(match table.as_str() {
                "CUSTOMER" => super::KeyFacts {
                    kept: 10,
                    rows: 100,
                    range: Some((1, 10)),
                    full: Some((1, 100)),
                    values: Some((1..=10).collect()),
                },
                _ => super::KeyFacts {
                    kept: 5,
                    rows: 10,
                    range: Some((3, 7)),
                    full: Some((1, 10)),
                    values: Some((3..=7).collect()),
                },
            })
        }
    }

    #[test]
    fn the_star_levers_filter_the_fact_table_and_join_the_most_selective_dimension_first() {
        let sql = "select d_year, sum(lo_revenue) from dates, customer, lineorder \
                   where lo_custkey = c_custkey and lo_orderdate = d_datekey and c_region = 1 \
                   and d_year = 1993 group by d_year";
        let bound = || crate::bind_query(sql, &catalog()).expect("plan");
        let on = super::optimize_with(bound(), super::PlannerOptions::default(), &Facts);
        let explained = on.explain();
        // CUSTOMER keeps 10 % of its rows, DATES 50 %: CUSTOMER joins first. Its keys span a
        // tenth of its range: a range on LO_CUSTKEY. DATES' keys span 4/9 of its range, but
        // the range keeps no fewer rows than half: a range on LO_ORDERDATE too.
        assert!(
            explained.contains(
                "Filter (((#0 >= Integer(3)) AND (#0 <= Integer(7))) AND ((#1 >= Integer(1)) AND (#1 <= Integer(10))))"
            ),
            "{explained}"
        );
        let customer_first = explained.find("Scan SSB.CUSTOMER").expect("customer");
        let dates = explained.find("Scan SSB.DATES").expect("dates");
        assert!(customer_first < dates, "{explained}");

        // Off, the plan has neither.
        let off = super::optimize_with(bound(), super::PlannerOptions::none(), &Facts).explain();
        assert!(!off.contains(">= Integer(1)"), "{off}");
        assert!(
            off.find("Scan SSB.DATES") < off.find("Scan SSB.CUSTOMER"),
            "{off}"
        );

        // A set, not a range, where the kept keys are scattered over the whole range.
        struct Scattered;
        impl super::Statistics for Scattered {
            fn rows(&self, _: &Plan) -> Option<u64> {
                Some(1_000)
            }
            fn keys(&self, _: &Plan, _: &Plan, _: usize) -> Option<super::KeyFacts> {
                Some(super::KeyFacts {
                    kept: 2,
                    rows: 100,
                    range: Some((1, 100)),
                    full: Some((1, 100)),
                    values: Some(vec![1, 100]),
                })
            }
        }
        let sql = "select sum(lo_revenue) from lineorder, customer \
                   where lo_custkey = c_custkey and c_region = 1";
        let plan = crate::bind_query(sql, &catalog()).expect("plan");
        let explained =
            super::optimize_with(plan, super::PlannerOptions::default(), &Scattered).explain();
        assert!(
            explained.contains("Filter #1 IN KEYS (2 keys, 1..=100)"),
            "{explained}"
        );
    }
}
