//! Join planning on the AST, before Polars sees the query.
//!
//! Polars plans the tables of a comma-separated FROM list in the order written and falls back to
//! a CROSS JOIN wherever a WHERE equality does not link a table to the ones before it; SSB's
//! Q4.x (`from dates, customer, supplier, part, lineorder`) then exhausts memory even at tiny
//! scale. This module turns such FROM lists into explicit `JOIN ... ON` chains:
//! - every `a.x = b.y` conjunct of WHERE linking two FROM items becomes a join condition;
//! - the chain starts at the item with the most links (the fact table; ties go to the larger
//!   table) and adds next the linked item that keeps the smallest share of its rows under its
//!   own filters, as [`Estimates`] counts them (the engine runs `count(*)` on each much smaller
//!   filtered dimension of the outermost SELECT: a few milliseconds, against joins that then
//!   see a fraction of the fact rows first), else the one with the most filters of its own,
//!   then the smaller;
//! - a FROM list that stays disconnected would be a cross join: it is refused when the tables
//!   involved are large, with a message saying how to write it, and left alone otherwise.
//!
//! It also moves the extra conditions of an inner `JOIN ... ON` (anything but `a.x = b.y`) into
//! WHERE, where Polars accepts them; for inner joins that is the same query.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, Ident, Join, JoinConstraint, JoinOperator, ObjectName, ObjectNamePart,
    OrderByKind, Query, Select, SelectItem, SetExpr, TableAlias, TableFactor, TableWithJoins,
    visit_expressions, visit_expressions_mut,
};

use crate::sql::Names;

/// Cross joins producing more rows than this are refused rather than attempted.
pub(crate) const MAX_CROSS_JOIN_ROWS: u64 = 10_000_000;

/// A dimension's filters are counted only when the fact table has at least this many times
/// its rows: counting it is then cheap next to the join it orders.
const COUNT_MIN_RATIO: u64 = 4;

/// A dimension's key values are listed in the fact table's filter only up to this many: a
/// longer `IN` list costs more to test per fact row than the join it spares (8,029 part keys of
/// SSB Q2.1 at SF 1 bought nothing; docs/PERFORMANCE.md).
pub(crate) const MAX_KEY_LIST: usize = 4_096;

/// ... or up to this many when they are tested as a key set (see [`Estimates::keyed_table`]),
/// whose cost per fact row does not grow with the number of keys.
pub(crate) const MAX_KEY_SET: usize = 65_536;

/// ... and only when the dimension's filters keep at most this share of its rows.
const MAX_LISTED_SHARE: f64 = 0.25;

/// ... and a list longer than [`MAX_KEY_LIST`] (a key set) only when they keep at most this
/// share: a key set that keeps a fifth of the keys (SSB's `c_region` at SF 10, 60,000 keys)
/// made Q3.1 13 % and Q4.1 7 % slower, one that keeps 4 % (`p_category`) made Q2.1 and Q4.3
/// faster (docs/PERFORMANCE.md).
const MAX_KEYED_SHARE: f64 = 0.1;

/// A key range filters the fact table only when it spans at most this share of the
/// dimension's whole key range.
const MAX_RANGE_SHARE: f64 = 0.5;

/// What a dimension's own filters keep of the integer key it joins the fact table on (the
/// planner's type: both front ends share the engine's cache of them).
pub(crate) use spool_planner::passes::KeyFacts;

/// Counts what a dimension's own filters keep, for join order, and which keys they keep, for
/// filtering the fact table before it joins.
pub(crate) trait Estimates {
    /// The rows of `relation` (a FROM item as SQL prints it) that `filter` keeps, or `None`
    /// when that cannot be told.
    fn count(&self, relation: &str, filter: &str) -> Option<u64>;

    /// What `filter` keeps of `relation`'s integer column `key`, or `None` when that cannot be
    /// told (or `key` is not an integer column).
    fn keys(&self, _relation: &str, _key: &str, _filter: &str) -> Option<KeyFacts> {
        None
    }

    /// Whether the keys found are also written into the fact table's filter (sideways
    /// information passing), not only used for join order.
    fn filters_fact(&self) -> bool {
        false
    }

    /// The name of a table, readable by this query's SQL only, holding the rows of `table`
    /// whose integer `column` is one of `keys` (distinct, ascending), tested on a bitmap
    /// instead of a hash set (see `keyset`). `table` is a table of the project or one this
    /// method named before. `None`: the keys are written as an `IN` list.
    fn keyed_table(&self, _table: &str, _column: &str, _keys: &[i64]) -> Option<String> {
        None
    }

    /// The most keys a dimension's list may have to filter the fact table: [`MAX_KEY_LIST`],
    /// or [`MAX_KEY_SET`] where [`Estimates::keyed_table`] makes key sets.
    fn max_listed_keys(&self) -> usize {
        MAX_KEY_LIST
    }

    /// The name of a table, readable by this query's SQL only, holding the rows of `table` (a
    /// table of the project or one this method or [`Estimates::keyed_table`] named before)
    /// inner-joined to `fold`'s dimension: `table`'s columns and the dimension's
    /// `fold.columns`. `None`: the dimension is joined as written (its key is not a unique
    /// integer of a narrow range, it keeps too many rows, or folding is off).
    fn folded_table(&self, _table: &str, _fold: &Fold) -> Option<String> {
        None
    }
}

/// A dimension the fact table joins on one key, read for nothing but that key, its own
/// filters and its columns: where its kept rows have each key once, the inner join is a
/// lookup of those columns by the fact row's key (see [`Estimates::folded_table`]), and the
/// query reads the fact table with the dimension's columns in place of the join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fold {
    /// The dimension's FROM item, as SQL prints it (a table of the project).
    pub relation: String,
    /// The dimension's key column (the catalog's spelling).
    pub key: String,
    /// The dimension's own filters, as SQL prints them; `None`: every row.
    pub filter: Option<String>,
    /// The fact table's column holding the key (the catalog's spelling).
    pub fact_column: String,
    /// The dimension's columns the query reads (the catalog's spelling), in the order found.
    pub columns: Vec<String>,
}

/// No counts: join order from the filters' number and the tables' sizes.
pub(crate) struct NoEstimates;

impl Estimates for NoEstimates {
    fn count(&self, _: &str, _: &str) -> Option<u64> {
        None
    }
}

/// One FROM item, as far as join planning needs to know it.
struct Rel {
    /// The name columns are qualified with: the alias, else the table name, lowercase.
    key: String,
    /// The table, view or CTE name, lowercase (empty for a derived table).
    table: String,
    /// What to write in front of a column to qualify it.
    qualifier: Ident,
    /// Lowercase column names, when known (tables and views of the catalog).
    columns: Option<HashSet<String>>,
    /// Estimated rows, when known.
    rows: Option<u64>,
}

/// What is known of the CTEs in scope: lowercase name -> (lowercase columns, estimated rows).
pub(crate) type Ctes = HashMap<String, (Option<HashSet<String>>, Option<u64>)>;

/// Learns the columns of `query`'s CTEs where they can be told from the SQL alone: plain
/// columns, aliased expressions and `*` over known tables.
pub(crate) fn learn_ctes(query: &Query, names: &Names, ctes: &mut Ctes) {
    let Some(with) = &query.with else { return };
    for cte in &with.cte_tables {
        let SetExpr::Select(select) = cte.query.body.as_ref() else {
            ctes.insert(cte.alias.name.value.to_lowercase(), (None, None));
            continue;
        };
        let sources: Vec<(Option<HashSet<String>>, Option<u64>)> = select
            .from
            .iter()
            .flat_map(|f| std::iter::once(&f.relation).chain(f.joins.iter().map(|j| &j.relation)))
            .map(|factor| match describe(factor, names, ctes) {
                Some(rel) => (rel.columns, rel.rows),
                None => (None, None),
            })
            .collect();
        let mut columns = Some(HashSet::new());
        for item in &select.projection {
            let learned: Option<Vec<String>> = match item {
                SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(vec![i.value.to_lowercase()]),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                    parts.last().map(|i| vec![i.value.to_lowercase()])
                }
                SelectItem::ExprWithAlias { alias, .. } => Some(vec![alias.value.to_lowercase()]),
                SelectItem::Wildcard(_) => sources
                    .iter()
                    .map(|(c, _)| c.clone())
                    .collect::<Option<Vec<_>>>()
                    .map(|all| all.into_iter().flatten().collect()),
                _ => None,
            };
            match (learned, columns.as_mut()) {
                (Some(found), Some(known)) => known.extend(found),
                _ => columns = None,
            }
        }
        let rows = sources.iter().filter_map(|(_, r)| *r).max();
        ctes.insert(cte.alias.name.value.to_lowercase(), (columns, rows));
    }
}

fn describe(factor: &TableFactor, names: &Names, ctes: &Ctes) -> Option<Rel> {
    let TableFactor::Table { name, alias, .. } = factor else {
        let TableFactor::Derived {
            alias: Some(alias), ..
        } = factor
        else {
            return None;
        };
        return Some(Rel {
            key: alias.name.value.to_lowercase(),
            table: String::new(),
            qualifier: alias.name.clone(),
            columns: None,
            rows: None,
        });
    };
    let table = match name.0.last()? {
        ObjectNamePart::Identifier(ident) => ident,
        ObjectNamePart::Function(_) => return None,
    };
    let lower = table.value.to_lowercase();
    let qualifier = alias
        .as_ref()
        .map_or_else(|| table.clone(), |a| a.name.clone());
    let (columns, rows) = match ctes.get(&lower) {
        // A CTE shadows a table of the same name.
        Some((columns, rows))
            if table.quote_style.is_none() || !names.tables.contains_key(&lower) =>
        {
            (columns.clone(), *rows)
        }
        _ => (
            names.table_columns.get(&lower).cloned(),
            names.rows.get(&lower).copied(),
        ),
    };
    Some(Rel {
        key: qualifier.value.to_lowercase(),
        table: lower,
        qualifier,
        columns,
        rows,
    })
}

/// Finds which FROM item a column reference belongs to.
fn owner(expr: &Expr, rels: &[Rel]) -> Option<usize> {
    match expr {
        Expr::Identifier(column) => {
            let column = column.value.to_lowercase();
            let mut found = rels.iter().enumerate().filter(|(_, r)| {
                r.columns
                    .as_ref()
                    .is_some_and(|columns| columns.contains(&column))
            });
            let first = found.next()?.0;
            // Ambiguous, or possibly a column of an item whose columns are unknown.
            if found.next().is_some() || rels.iter().any(|r| r.columns.is_none()) {
                return None;
            }
            Some(first)
        }
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
            let qualifier = parts[0].value.to_lowercase();
            rels.iter().position(|r| r.key == qualifier)
        }
        _ => None,
    }
}

/// Returns the FROM items an expression reads, or `None` when that cannot be told.
fn owners(expr: &Expr, rels: &[Rel]) -> Option<BTreeSet<usize>> {
    let mut found = BTreeSet::new();
    let flow = visit_expressions(expr, |e| match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match owner(e, rels) {
            Some(i) => {
                found.insert(i);
                ControlFlow::Continue(())
            }
            None => ControlFlow::Break(()),
        },
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    flow.is_continue().then_some(found)
}

fn conjuncts(expr: Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                *inner,
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner, out)
        }
        other => out.push(other),
    }
}

fn and_all(exprs: impl IntoIterator<Item = Expr>) -> Option<Expr> {
    exprs.into_iter().reduce(|left, right| Expr::BinaryOp {
        left: Box::new(left),
        op: BinaryOperator::And,
        right: Box::new(right),
    })
}

/// If `expr` is `col = col` between two different FROM items, returns them.
fn link(expr: &Expr, rels: &[Rel]) -> Option<(usize, usize)> {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = expr
    else {
        return None;
    };
    let (a, b) = (owner(left, rels)?, owner(right, rels)?);
    (a != b).then_some((a, b))
}

/// Writes a column reference qualified with its FROM item, as Polars' join planner wants it.
fn qualified(expr: &Expr, rel: &Rel) -> Expr {
    match expr {
        Expr::Identifier(column) => {
            Expr::CompoundIdentifier(vec![rel.qualifier.clone(), column.clone()])
        }
        other => other.clone(),
    }
}

/// Plans the joins of every SELECT of `query` (not of nested queries; the visitor reaches them).
pub(crate) fn plan(
    query: &mut Query,
    names: &Names,
    ctes: &mut Ctes,
    estimates: &dyn Estimates,
) -> Result<(), String> {
    learn_ctes(query, names, ctes);
    let order_by: Vec<Expr> = match query.order_by.as_ref().map(|o| &o.kind) {
        Some(OrderByKind::Expressions(list)) => list.iter().map(|o| o.expr.clone()).collect(),
        _ => Vec::new(),
    };
    plan_set_expr(&mut query.body, names, ctes, estimates, &order_by)
}

/// Plans `body`; `order_by` holds the expressions of the query's ORDER BY, which may read the
/// columns of `body`'s FROM items too.
fn plan_set_expr(
    body: &mut SetExpr,
    names: &Names,
    ctes: &Ctes,
    estimates: &dyn Estimates,
    order_by: &[Expr],
) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => {
            move_inner_join_filters(select);
            plan_select(select, names, ctes, estimates, order_by)
        }
        SetExpr::SetOperation { left, right, .. } => {
            plan_set_expr(left, names, ctes, &NoEstimates, &[])?;
            plan_set_expr(right, names, ctes, &NoEstimates, &[])
        }
        _ => Ok(()),
    }
}

/// Moves conditions other than `a.x = b.y` out of inner joins' ON into WHERE.
fn move_inner_join_filters(select: &mut Select) {
    let mut moved = Vec::new();
    for from in &mut select.from {
        for join in &mut from.joins {
            let (JoinOperator::Join(JoinConstraint::On(on))
            | JoinOperator::Inner(JoinConstraint::On(on))) = &mut join.join_operator
            else {
                continue;
            };
            let mut parts = Vec::new();
            conjuncts(on.clone(), &mut parts);
            let (keep, extra): (Vec<Expr>, Vec<Expr>) =
                parts.into_iter().partition(is_column_equality);
            if extra.is_empty() || keep.is_empty() {
                continue;
            }
            if let Some(kept) = and_all(keep) {
                *on = kept;
            }
            moved.extend(extra);
        }
    }
    if !moved.is_empty() {
        let mut all = Vec::new();
        if let Some(selection) = select.selection.take() {
            all.push(nested(selection));
        }
        all.extend(moved.into_iter().map(nested));
        select.selection = and_all(all);
    }
}

fn nested(expr: Expr) -> Expr {
    match expr {
        e @ Expr::BinaryOp {
            op: BinaryOperator::Or,
            ..
        } => Expr::Nested(Box::new(e)),
        other => other,
    }
}

fn is_column_equality(expr: &Expr) -> bool {
    let is_column = |e: &Expr| matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
    matches!(expr, Expr::BinaryOp { left, op: BinaryOperator::Eq, right }
        if is_column(left) && is_column(right))
}

fn plan_select(
    select: &mut Select,
    names: &Names,
    ctes: &Ctes,
    estimates: &dyn Estimates,
    order_by: &[Expr],
) -> Result<(), String> {
    if select.from.len() < 2 || select.from.iter().any(|f| !f.joins.is_empty()) {
        return Ok(());
    }
    let Some(rels) = select
        .from
        .iter()
        .map(|f| describe(&f.relation, names, ctes))
        .collect::<Option<Vec<Rel>>>()
    else {
        return Ok(());
    };
    let mut parts = Vec::new();
    if let Some(selection) = select.selection.take() {
        conjuncts(selection, &mut parts);
    }
    let n = rels.len();
    let mut edges: Vec<(usize, usize, usize)> = Vec::new(); // (a, b, conjunct index)
    let mut filters = vec![0usize; n];
    for (i, part) in parts.iter().enumerate() {
        if let Some((a, b)) = link(part, &rels) {
            edges.push((a, b, i));
        } else if let Some(set) = owners(part, &rels)
            && set.len() == 1
            && let Some(&only) = set.first()
        {
            filters[only] += 1;
        }
    }
    let degree = |r: usize| edges.iter().filter(|(a, b, _)| *a == r || *b == r).count();
    let rows = |r: usize| rels[r].rows.unwrap_or(0);
    let start = (0..n)
        .max_by(|&x, &y| {
            (degree(x), rows(x))
                .cmp(&(degree(y), rows(y)))
                // On a full tie keep the first written.
                .then(y.cmp(&x))
        })
        .unwrap_or(0);
    // The share of its rows each much smaller filtered dimension keeps (1: unfiltered or
    // not counted), to join the most selective first; and, for a dimension joined to the
    // fact table on an integer key, the keys it keeps, to filter the fact table with.
    let mut fact_filters: Vec<KeyFilter> = Vec::new();
    let kept: Vec<f64> = (0..n)
        .map(|r| {
            let fact_rows = rows(start);
            let small = rels[r]
                .rows
                .filter(|&n| n > 0 && n.saturating_mul(COUNT_MIN_RATIO) <= fact_rows);
            let Some(total) = small.filter(|_| r != start && filters[r] > 0) else {
                return 1.0;
            };
            let own: Vec<&Expr> = own_filters(&parts, &rels, r)
                .into_iter()
                .map(|i| &parts[i])
                .collect();
            let deterministic = own.iter().all(|p| is_deterministic(p));
            let own = and_all(own.into_iter().cloned().map(nested));
            let relation = select.from.get(r).map(|f| &f.relation);
            let (Some(own), Some(relation @ TableFactor::Table { .. })) = (own, relation) else {
                return 1.0;
            };
            let (relation, own) = (relation.to_string(), own.to_string());
            let fact_key = edges
                .iter()
                .filter(|&&(a, b, _)| (a, b) == (start, r) || (a, b) == (r, start))
                .find_map(|&(_, _, i)| fact_and_dimension_key(&parts[i], &rels, start, r));
            if deterministic
                && let Some((fact_column, dimension_key)) = fact_key
                && let Some(facts) = estimates.keys(&relation, &dimension_key.to_string(), &own)
            {
                if estimates.filters_fact() {
                    fact_filters.extend(key_filter(
                        &fact_column,
                        &facts,
                        estimates.max_listed_keys(),
                    ));
                }
                return facts.kept as f64 / facts.rows.max(1) as f64;
            }
            estimates
                .count(&relation, &own)
                .map_or(1.0, |kept| kept as f64 / total as f64)
        })
        .collect();
    // Dimensions read for their columns only become lookups in the fact table's place.
    let mut folded = vec![false; n];
    let mut dropped = vec![false; parts.len()];
    let mut fact_source: Option<String> = None;
    if let Some(fact_table) = foldable_fact(select, start, &rels, names, ctes)
        && folding_allowed(select, &parts, order_by)
    {
        for r in (0..n).filter(|&r| r != start) {
            let Some((fold, drops)) = fold_of(select, &parts, &edges, &rels, start, r, order_by)
            else {
                continue;
            };
            let base = fact_source.as_deref().unwrap_or(&fact_table);
            if let Some(name) = estimates.folded_table(base, &fold) {
                folded[r] = true;
                for i in drops {
                    dropped[i] = true;
                }
                fact_source = Some(name);
            }
        }
    }
    let mut order = vec![start];
    let mut joined = folded.clone();
    joined[start] = true;
    let linked = |r: usize, joined: &[bool]| {
        edges
            .iter()
            .any(|&(a, b, _)| (a == r && joined[b]) || (b == r && joined[a]))
    };
    while let Some(next) = (0..n)
        .filter(|&r| !joined[r] && linked(r, &joined))
        .min_by(|&x, &y| {
            kept[x]
                .total_cmp(&kept[y])
                .then(filters[y].cmp(&filters[x]))
                .then(rows(x).cmp(&rows(y)))
                .then(x.cmp(&y))
        })
    {
        joined[next] = true;
        order.push(next);
    }
    if order.len() + folded.iter().filter(|&&f| f).count() < n {
        let product = (0..n).filter(|&r| !joined[r]).fold(
            order.iter().map(|&r| rows(r)).max().unwrap_or(0).max(1),
            |acc: u64, r| acc.saturating_mul(rows(r).max(1)),
        );
        // Refuse only when every item's columns are known, so no link can have been missed.
        if product > MAX_CROSS_JOIN_ROWS && rels.iter().all(|r| r.columns.is_some()) {
            let lone: Vec<String> = (0..n)
                .filter(|&r| !joined[r])
                .map(|r| rels[r].qualifier.value.clone())
                .collect();
            return Err(format!(
                "no join condition links {} to the other tables in FROM; that would be a cross \
                 join of about {product} rows. Add a condition such as a.key = b.key, or write \
                 CROSS JOIN if a cross join is really meant",
                lone.join(", ")
            ));
        }
        select.selection = and_all(parts);
        return Ok(());
    }

    // Build the chain: each item joins ON the links to the items before it.
    let mut used = dropped;
    let mut position = vec![usize::MAX; n];
    for (p, &r) in order.iter().enumerate() {
        position[r] = p;
    }
    let mut items: Vec<Option<TableWithJoins>> = select.from.drain(..).map(Some).collect();
    let Some(mut chain) = items[start].take() else {
        return Err("join planning lost a table".to_owned());
    };
    for &r in &order[1..] {
        let mut on = Vec::new();
        for &(a, b, i) in &edges {
            let (earlier, this) = if a == r { (b, a) } else { (a, b) };
            if this != r || position[earlier] > position[r] || used[i] {
                continue;
            }
            let Expr::BinaryOp { left, right, .. } = &parts[i] else {
                continue;
            };
            let (l, rr) = if owner(left, &rels) == Some(earlier) {
                (left, right)
            } else {
                (right, left)
            };
            on.push(Expr::BinaryOp {
                left: Box::new(qualified(l, &rels[earlier])),
                op: BinaryOperator::Eq,
                right: Box::new(qualified(rr, &rels[r])),
            });
            used[i] = true;
        }
        let Some(item) = items[r].take() else {
            return Err("join planning lost a table".to_owned());
        };
        let Some(on) = and_all(on) else {
            return Err("join planning found no condition".to_owned());
        };
        chain.joins.push(Join {
            relation: item.relation,
            global: false,
            join_operator: JoinOperator::Inner(JoinConstraint::On(on)),
        });
    }
    // A folded dimension's key filter stays: the scan tests it, where a lookup is made only
    // for the rows the scan keeps.
    let chosen = choose_key_filters(fact_filters);
    if let Some(source) = &fact_source {
        read_from(&mut chain.relation, source, &rels[start].qualifier);
    }
    if !chosen.is_empty() || fact_source.is_some() {
        // A keyed table is made from the project's table of that name: never for a CTE, which
        // may shadow a table of the same name.
        let keyable = !ctes.contains_key(&rels[start].table);
        prefilter(&mut chain.relation, chosen, keyable.then_some(estimates));
    }
    select.from = vec![chain];
    select.selection = and_all(
        parts
            .into_iter()
            .zip(used)
            .filter(|(_, used)| !used)
            .map(|(part, _)| nested(part)),
    );
    // A folded dimension's columns are the fact table's now.
    let folded_keys: Vec<&str> = (0..n)
        .filter(|&r| folded[r])
        .map(|r| rels[r].key.as_str())
        .collect();
    if !folded_keys.is_empty() {
        let fact = &rels[start].qualifier;
        let _ = visit_expressions_mut(select, |e| {
            if let Expr::CompoundIdentifier(parts) = e
                && let [qualifier, _] = parts.as_mut_slice()
                && folded_keys.contains(&qualifier.value.to_lowercase().as_str())
            {
                *qualifier = fact.clone();
            }
            ControlFlow::<()>::Continue(())
        });
    }
    Ok(())
}

/// The fact table's name as the catalog spells it, when it is a plain table of the project
/// that dimensions can be folded into.
fn foldable_fact(
    select: &Select,
    start: usize,
    rels: &[Rel],
    names: &Names,
    ctes: &Ctes,
) -> Option<String> {
    let rel = &rels[start];
    if rel.columns.is_none()
        || ctes.contains_key(&rel.table)
        || !names.table_columns.contains_key(&rel.table)
        || names
            .views
            .iter()
            .any(|(view, _)| view.to_lowercase() == rel.table)
    {
        return None;
    }
    plain_table(&select.from.get(start)?.relation)
}

/// The table a FROM item names, as written, when it is a plain table reference: no table
/// function arguments, no column aliases, no schema.
fn plain_table(factor: &TableFactor) -> Option<String> {
    let TableFactor::Table {
        name, alias, args, ..
    } = factor
    else {
        return None;
    };
    if args.is_some() || alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return None;
    }
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(table)] => Some(table.value.clone()),
        _ => None,
    }
}

/// Whether a SELECT's joins may become lookups at all: no `*` (it would read every column of
/// a folded dimension) and no subquery (it might read a dimension's columns from inside).
fn folding_allowed(select: &Select, parts: &[Expr], order_by: &[Expr]) -> bool {
    let wildcard = select.projection.iter().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    let check = |e: &Expr| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    };
    !wildcard
        && visit_expressions(select, check).is_continue()
        && parts
            .iter()
            .chain(order_by)
            .all(|e| visit_expressions(e, check).is_continue())
}

/// The fold of FROM item `r` into the fact table `start`, with the WHERE conjuncts it
/// replaces (its link and its own filters), when `r` is a project table much smaller than the
/// fact table, linked to nothing but the fact table and by one key, with deterministic
/// filters, and each of its columns the query reads is a name no other FROM item has.
fn fold_of(
    select: &Select,
    parts: &[Expr],
    edges: &[(usize, usize, usize)],
    rels: &[Rel],
    start: usize,
    r: usize,
    order_by: &[Expr],
) -> Option<(Fold, Vec<usize>)> {
    let rel = &rels[r];
    let small = rel
        .rows
        .zip(rels[start].rows)
        .is_some_and(|(rows, fact)| rows.saturating_mul(COUNT_MIN_RATIO) <= fact);
    let relation = &select.from.get(r)?.relation;
    if !small || rel.table.is_empty() || plain_table(relation).is_none() {
        return None;
    }
    let touching: Vec<&(usize, usize, usize)> = edges
        .iter()
        .filter(|(a, b, _)| *a == r || *b == r)
        .collect();
    let &[&(a, b, link_at)] = touching.as_slice() else {
        return None;
    };
    if a != start && b != start {
        return None;
    }
    let (fact_column, dimension_key) = fact_and_dimension_key(&parts[link_at], rels, start, r)?;
    let key = match &dimension_key {
        Expr::Identifier(column) => column.value.clone(),
        Expr::CompoundIdentifier(names) => names.last()?.value.clone(),
        _ => return None,
    };
    let own = own_filters(parts, rels, r);
    if !own.iter().all(|&i| is_deterministic(&parts[i])) {
        return None;
    }
    let filter = and_all(own.iter().map(|&i| nested(parts[i].clone()))).map(|f| f.to_string());
    // The dimension's columns read anywhere else; a qualified one in ORDER BY is not
    // rewritten, so it keeps the join.
    let own_columns = rel.columns.as_ref()?;
    let mut columns: Vec<String> = Vec::new();
    let mut readable = true;
    let mut note = |e: &Expr, in_order_by: bool| {
        match e {
            Expr::Identifier(column)
                if own_columns.contains(&column.value.to_lowercase())
                    && !columns.contains(&column.value) =>
            {
                columns.push(column.value.clone());
            }
            Expr::CompoundIdentifier(names) => match names.as_slice() {
                [qualifier, column] if qualifier.value.to_lowercase() == rel.key => {
                    if in_order_by || !own_columns.contains(&column.value.to_lowercase()) {
                        readable = false;
                    } else if !columns.contains(&column.value) {
                        columns.push(column.value.clone());
                    }
                }
                [_, _] => {}
                _ => readable = false,
            },
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions(select, |e| note(e, false));
    for (i, part) in parts.iter().enumerate() {
        if i != link_at && !own.contains(&i) {
            let _ = visit_expressions(part, |e| note(e, false));
        }
    }
    for expr in order_by {
        let _ = visit_expressions(expr, |e| note(e, true));
    }
    // Each column keeps its name in the fact table's rows, so no other item may have it.
    let clash = |column: &String| {
        let lower = column.to_lowercase();
        rels.iter().enumerate().any(|(i, other)| {
            i != r
                && other
                    .columns
                    .as_ref()
                    .is_none_or(|known| known.contains(&lower))
        })
    };
    if !readable || columns.iter().any(clash) {
        return None;
    }
    let mut drops = own;
    drops.push(link_at);
    Some((
        Fold {
            relation: relation.to_string(),
            key,
            filter,
            fact_column: fact_column.value,
            columns,
        },
        drops,
    ))
}

/// The WHERE conjuncts (by index) that read FROM item `r` alone: its own filters.
fn own_filters(parts: &[Expr], rels: &[Rel], r: usize) -> Vec<usize> {
    (0..parts.len())
        .filter(|&i| {
            link(&parts[i], rels).is_none()
                && owners(&parts[i], rels).is_some_and(|s| s.len() == 1 && s.contains(&r))
        })
        .collect()
}

/// Makes the fact table's FROM item read the table `source` under its old qualifier.
fn read_from(fact: &mut TableFactor, source: &str, qualifier: &Ident) {
    if let TableFactor::Table { name, alias, .. } = fact {
        *name = ObjectName::from(vec![Ident::with_quote('"', source)]);
        if alias.is_none() {
            *alias = Some(TableAlias {
                explicit: true,
                name: qualifier.clone(),
                columns: Vec::new(),
                at: None,
            });
        }
    }
}

/// For a link `fact.x = dimension.y`, the fact's column `x` (unqualified) and the dimension's
/// column reference `y` as written.
fn fact_and_dimension_key(
    link: &Expr,
    rels: &[Rel],
    fact: usize,
    dimension: usize,
) -> Option<(Ident, Expr)> {
    let Expr::BinaryOp { left, right, .. } = link else {
        return None;
    };
    let (fact_side, dimension_side) = if owner(left, rels) == Some(fact) {
        (left, right)
    } else {
        (right, left)
    };
    if owner(dimension_side, rels) != Some(dimension) {
        return None;
    }
    let column = match fact_side.as_ref() {
        Expr::Identifier(column) => column.clone(),
        Expr::CompoundIdentifier(parts) => parts.last()?.clone(),
        _ => return None,
    };
    Some((column, dimension_side.as_ref().clone()))
}

/// Functions a dimension's filter may call and still keep the same rows each time it runs
/// (its keys are found once, cached, and written into the fact table's filter).
const DETERMINISTIC: &[&str] = &[
    "abs",
    "coalesce",
    "concat",
    "ends_with",
    "extract",
    "initcap",
    "left",
    "length",
    "lower",
    "ltrim",
    "nullif",
    "replace",
    "reverse",
    "right",
    "round",
    "rtrim",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "trim",
    "upper",
];

/// Whether `expr` keeps the same rows each time: no subquery, and no function but the
/// [`DETERMINISTIC`] ones (no `random()`, no `current_date`).
fn is_deterministic(expr: &Expr) -> bool {
    visit_expressions(expr, |e| match e {
        Expr::Function(function) => {
            let name = function.name.to_string().to_lowercase();
            if DETERMINISTIC.contains(&name.as_str()) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        }
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_continue()
}

fn integer(value: i64) -> Expr {
    let literal = Expr::value(sqlparser::ast::Value::Number(
        value.abs().to_string(),
        false,
    ));
    if value < 0 {
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Minus,
            expr: Box::new(literal),
        }
    } else {
        literal
    }
}

/// A condition on the fact table implied by the keys one dimension keeps, with the share of
/// fact rows it is expected to keep.
struct KeyFilter {
    share: f64,
    condition: Expr,
    /// For an `IN` list: the fact's column and its keys, for a key set to test instead.
    keys: Option<(Ident, Vec<i64>)>,
}

/// The condition on the fact table's `column` that the keys a dimension keeps imply for an
/// inner join on it (nothing is lost: a fact row outside it finds no dimension row): no row
/// when the dimension keeps no key; else the kept keys' range when it is narrow against the
/// dimension's whole range and not much looser than the keys themselves; else the keys
/// themselves when few and selective. Its share is what the dimension keeps of its rows (fact
/// rows spread evenly over the keys), or the range's share of the whole range if larger.
fn key_filter(column: &Ident, facts: &KeyFacts, max_keys: usize) -> Option<KeyFilter> {
    let reference = || Box::new(Expr::Identifier(column.clone()));
    let Some((low, high)) = facts.range else {
        // No key kept: the inner join keeps no fact row either.
        return Some(KeyFilter {
            share: 0.0,
            condition: Expr::BinaryOp {
                left: Box::new(integer(1)),
                op: BinaryOperator::Eq,
                right: Box::new(integer(0)),
            },
            keys: None,
        });
    };
    let kept = facts.kept as f64 / facts.rows.max(1) as f64;
    let span_share = facts.full.and_then(|(full_low, full_high)| {
        let full = (full_high as f64) - (full_low as f64);
        (full > 0.0).then(|| ((high as f64) - (low as f64)) / full)
    });
    let listed = facts.values.as_ref().filter(|values| {
        !values.is_empty()
            && values.len() <= max_keys
            && kept <= MAX_LISTED_SHARE
            && (values.len() <= MAX_KEY_LIST || kept <= MAX_KEYED_SHARE)
    });
    match span_share {
        // A range is cheaper to test than a list: taken unless the list keeps far fewer rows.
        Some(span) if span <= MAX_RANGE_SHARE && (listed.is_none() || span <= 2.0 * kept) => {
            Some(KeyFilter {
                share: kept.max(span),
                condition: Expr::Between {
                    expr: reference(),
                    negated: false,
                    low: Box::new(integer(low)),
                    high: Box::new(integer(high)),
                },
                keys: None,
            })
        }
        _ => listed.map(|values| KeyFilter {
            share: kept,
            condition: Expr::InList {
                expr: reference(),
                list: values.iter().map(|&v| integer(v)).collect(),
                negated: false,
            },
            keys: Some((column.clone(), values.clone())),
        }),
    }
}

/// Rows per Parquet row group assumed when choosing key filters: writers use 100,000 to
/// 1,000,000 (SSB's files 200,000).
const ROW_GROUP_ROWS: f64 = 200_000.0;

/// Which key filters to write into the fact table's scan: every key range (cheap to test), the
/// most selective key list, and more lists only where together they leave most row groups
/// without a row. Polars decodes every column a scan filter reads in full and the other columns
/// of every row group where a row is left; a second `IN` list costs a hash probe per fact row
/// and pays only by emptying row groups (measured on SSB at SF 1: Q3.3's two city lists 58 ms,
/// one 52 ms; Q2.2's part and supplier lists 83 ms, the part list 74 ms; Q3.4's two lists and
/// its month range, which leave almost no row group with a row, 42 ms, one list and the range
/// 54 ms).
fn choose_key_filters(filters: Vec<KeyFilter>) -> Vec<KeyFilter> {
    let (ranges, mut lists): (Vec<KeyFilter>, Vec<KeyFilter>) =
        filters.into_iter().partition(|f| f.keys.is_none());
    lists.sort_by(|a, b| a.share.total_cmp(&b.share));
    let mut left = ranges.iter().fold(ROW_GROUP_ROWS, |left, f| left * f.share);
    let mut taken = 0;
    for (i, list) in lists.iter().enumerate() {
        left *= list.share;
        if left < 1.0 {
            taken = i + 1;
            break;
        }
    }
    ranges
        .into_iter()
        .chain(lists.into_iter().take(taken.max(1)))
        .collect()
}

/// Filters the fact table before it joins: `fact` becomes `(SELECT * FROM fact WHERE filter)`
/// under the name the query reads it by. Polars 0.55 pushes such a filter into the scan, where
/// the same `IN` list written in the joined query's WHERE was tested after the joins (7x
/// slower on SSB Q3.4). A key list becomes a table `estimates` registers with the list tested
/// as a key set (see [`Estimates::keyed_table`]), read in the fact's place, or else an `IN`
/// list. Left alone when the fact is not a plain table or view reference.
fn prefilter(fact: &mut TableFactor, filters: Vec<KeyFilter>, estimates: Option<&dyn Estimates>) {
    let TableFactor::Table {
        name, alias, args, ..
    } = fact
    else {
        return;
    };
    if args.is_some() || alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return;
    }
    let Some(ObjectNamePart::Identifier(table)) = name.0.last() else {
        return;
    };
    let qualifier = alias
        .as_ref()
        .map_or_else(|| table.clone(), |a| a.name.clone());
    let mut source = name.to_string();
    let mut keyed = (name.0.len() == 1).then(|| table.value.clone());
    let mut conditions = Vec::new();
    for filter in filters {
        if let (Some((column, keys)), Some(base), Some(estimates)) =
            (&filter.keys, &keyed, estimates)
            && let Some(table) = estimates.keyed_table(base, &column.value, keys)
        {
            source = Ident::with_quote('"', table.as_str()).to_string();
            keyed = Some(table);
            continue;
        }
        // A list longer than an `IN` list should be costs more than the join it spares: left
        // to the join.
        if filter
            .keys
            .as_ref()
            .is_some_and(|(_, keys)| keys.len() > MAX_KEY_LIST)
        {
            continue;
        }
        conditions.push(nested(filter.condition));
    }
    let text = match and_all(conditions) {
        Some(filter) => {
            format!("SELECT 1 FROM (SELECT * FROM {source} WHERE {filter}) AS {qualifier}")
        }
        None => format!("SELECT 1 FROM (SELECT * FROM {source}) AS {qualifier}"),
    };
    let Ok(parsed) =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::GenericDialect {}, &text)
    else {
        return;
    };
    let Some(sqlparser::ast::Statement::Query(query)) = parsed.into_iter().next() else {
        return;
    };
    let SetExpr::Select(select) = *query.body else {
        return;
    };
    if let Some(from) = select.from.into_iter().next() {
        *fact = from.relation;
    }
}
