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
    BinaryOperator, Expr, Ident, Join, JoinConstraint, JoinOperator, ObjectNamePart, Query, Select,
    SelectItem, SetExpr, TableFactor, TableWithJoins, visit_expressions,
};

use crate::sql::Names;

/// Cross joins producing more rows than this are refused rather than attempted.
pub(crate) const MAX_CROSS_JOIN_ROWS: u64 = 10_000_000;

/// A dimension's filters are counted only when the fact table has at least this many times
/// its rows: counting it is then cheap next to the join it orders.
const COUNT_MIN_RATIO: u64 = 4;

/// Counts what a dimension's own filters keep, for join order.
pub(crate) trait Estimates {
    /// The rows of `relation` (a FROM item as SQL prints it) that `filter` keeps, or `None`
    /// when that cannot be told.
    fn count(&self, relation: &str, filter: &str) -> Option<u64>;
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
    plan_set_expr(&mut query.body, names, ctes, estimates)
}

fn plan_set_expr(
    body: &mut SetExpr,
    names: &Names,
    ctes: &Ctes,
    estimates: &dyn Estimates,
) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => {
            move_inner_join_filters(select);
            plan_select(select, names, ctes, estimates)
        }
        SetExpr::SetOperation { left, right, .. } => {
            plan_set_expr(left, names, ctes, &NoEstimates)?;
            plan_set_expr(right, names, ctes, &NoEstimates)
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
    // not counted), to join the most selective first.
    let kept: Vec<f64> = (0..n)
        .map(|r| {
            let fact_rows = rows(start);
            let small = rels[r]
                .rows
                .filter(|&n| n > 0 && n.saturating_mul(COUNT_MIN_RATIO) <= fact_rows);
            let Some(total) = small.filter(|_| r != start && filters[r] > 0) else {
                return 1.0;
            };
            let own = and_all(
                parts
                    .iter()
                    .filter(|p| {
                        link(p, &rels).is_none()
                            && owners(p, &rels).is_some_and(|s| s.len() == 1 && s.contains(&r))
                    })
                    .cloned()
                    .map(nested),
            );
            let relation = select.from.get(r).map(|f| &f.relation);
            match (own, relation) {
                (Some(own), Some(relation @ TableFactor::Table { .. })) => estimates
                    .count(&relation.to_string(), &own.to_string())
                    .map_or(1.0, |kept| kept as f64 / total as f64),
                _ => 1.0,
            }
        })
        .collect();
    let mut order = vec![start];
    let mut joined = vec![false; n];
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
    if order.len() < n {
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
    let mut used = vec![false; parts.len()];
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
    select.from = vec![chain];
    select.selection = and_all(
        parts
            .into_iter()
            .zip(used)
            .filter(|(_, used)| !used)
            .map(|(part, _)| nested(part)),
    );
    Ok(())
}
