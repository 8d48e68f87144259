//! Rewrites of SQL that Kylin users send into forms Polars SQL runs, on the AST.
//!
//! - `YEAR(x)`, `QUARTER(x)`, `MONTH(x)`, `DAY(x)`, `HOUR(x)`, `MINUTE(x)`, `SECOND(x)` become
//!   `EXTRACT(... FROM x)`;
//! - `DATE_TRUNC('year' | 'month' | 'day', x)` becomes a date built from `STRFTIME`; other units
//!   are refused with a message naming them;
//! - a `LEFT JOIN ... ON` whose extra conditions read only the joined table gets them applied to
//!   that table before the join (Polars would otherwise filter after the join and lose the
//!   unmatched left rows); extra conditions reading the left side are refused.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, JoinConstraint,
    JoinOperator, ObjectNamePart, Query, Select, SetExpr, TableFactor, Value, VisitorMut,
    visit_expressions,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::sql::Names;

fn parse_expr(text: &str) -> Result<Expr, String> {
    Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("internal rewrite failed: {e}"))
}

fn parse_factor(text: &str) -> Result<TableFactor, String> {
    let parsed = Parser::parse_sql(&GenericDialect {}, &format!("SELECT * FROM {text}"))
        .map_err(|e| format!("internal rewrite failed: {e}"))?;
    let Some(sqlparser::ast::Statement::Query(query)) = parsed.into_iter().next() else {
        return Err("internal rewrite failed".to_owned());
    };
    match *query.body {
        SetExpr::Select(mut select) if !select.from.is_empty() => {
            Ok(select.from.swap_remove(0).relation)
        }
        _ => Err("internal rewrite failed".to_owned()),
    }
}

/// The rewrites of the module docs, run over a whole statement.
pub(crate) struct Compat<'a> {
    names: &'a Names,
    pub error: Option<String>,
}

impl<'a> Compat<'a> {
    /// Rewrites against the tables of `names`.
    pub fn new(names: &'a Names) -> Self {
        Self { names, error: None }
    }

    fn fail(&mut self, message: String) -> ControlFlow<()> {
        self.error.get_or_insert(message);
        ControlFlow::Break(())
    }
}

fn single_arg(args: &FunctionArguments) -> Option<Vec<&Expr>> {
    let FunctionArguments::List(list) = args else {
        return None;
    };
    list.args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

impl VisitorMut for Compat<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut()
            && let Err(e) = filter_before_left_join(select, self.names)
        {
            return self.fail(e);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        let [ObjectNamePart::Identifier(name)] = function.name.0.as_slice() else {
            return ControlFlow::Continue(());
        };
        let name = name.value.to_ascii_uppercase();
        let Some(args) = single_arg(&function.args) else {
            return ControlFlow::Continue(());
        };
        let replacement = match (name.as_str(), args.as_slice()) {
            (
                "YEAR" | "QUARTER" | "MONTH" | "DAY" | "DAYOFMONTH" | "HOUR" | "MINUTE" | "SECOND",
                [arg],
            ) => {
                let field = if name == "DAYOFMONTH" { "DAY" } else { &name };
                parse_expr(&format!("EXTRACT({field} FROM {arg})"))
            }
            ("DATE_TRUNC", [unit, arg]) => {
                let unit = match unit {
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) => s.to_ascii_lowercase(),
                        other => other.to_string(),
                    },
                    other => other.to_string(),
                };
                match unit.as_str() {
                    "year" => parse_expr(&format!("DATE(STRFTIME({arg}, '%Y-01-01'))")),
                    "month" => parse_expr(&format!("DATE(STRFTIME({arg}, '%Y-%m-01'))")),
                    "day" => parse_expr(&format!("CAST({arg} AS DATE)")),
                    other => Err(format!(
                        "DATE_TRUNC supports the units 'year', 'month' and 'day'; '{other}' is not supported"
                    )),
                }
            }
            _ => return ControlFlow::Continue(()),
        };
        match replacement {
            Ok(e) => {
                *expr = e;
                ControlFlow::Continue(())
            }
            Err(e) => self.fail(e),
        }
    }
}

/// The name a FROM item's columns are qualified with, lowercase.
fn qualifier(factor: &TableFactor) -> Option<String> {
    match factor {
        TableFactor::Table { name, alias, .. } => alias
            .as_ref()
            .map(|a| a.name.value.clone())
            .or_else(|| match name.0.last()? {
                ObjectNamePart::Identifier(i) => Some(i.value.clone()),
                ObjectNamePart::Function(_) => None,
            }),
        TableFactor::Derived { alias, .. } => alias.as_ref().map(|a| a.name.value.clone()),
        _ => None,
    }
    .map(|s| s.to_lowercase())
}

/// Whether every column `expr` reads is qualified with `name`, or unqualified but known to be a
/// column of the right side (`right_columns`).
fn reads_only(expr: &Expr, name: &str, right_columns: &HashSet<String>) -> bool {
    let flow = visit_expressions(expr, |e| match e {
        Expr::CompoundIdentifier(parts)
            if parts.len() == 2 && parts[0].value.to_lowercase() != name =>
        {
            ControlFlow::Break(())
        }
        Expr::Identifier(i) if !right_columns.contains(&i.value.to_lowercase()) => {
            ControlFlow::Break(())
        }
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    flow.is_continue()
}

fn is_column_equality(expr: &Expr) -> bool {
    let is_column = |e: &Expr| matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
    matches!(expr, Expr::BinaryOp { left, op: BinaryOperator::Eq, right }
        if is_column(left) && is_column(right))
}

fn split_and(expr: Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(*left, out);
            split_and(*right, out);
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
            split_and(*inner, out)
        }
        other => out.push(other),
    }
}

/// Applies a LEFT JOIN's conditions on the joined table before the join.
fn filter_before_left_join(select: &mut Select, names: &Names) -> Result<(), String> {
    for from in &mut select.from {
        for join in &mut from.joins {
            let outer = match &mut join.join_operator {
                JoinOperator::Left(JoinConstraint::On(on))
                | JoinOperator::LeftOuter(JoinConstraint::On(on)) => Some((on, true)),
                JoinOperator::Right(JoinConstraint::On(on))
                | JoinOperator::RightOuter(JoinConstraint::On(on))
                | JoinOperator::FullOuter(JoinConstraint::On(on)) => Some((on, false)),
                _ => None,
            };
            let Some((on, is_left)) = outer else { continue };
            let mut parts = Vec::new();
            split_and(on.clone(), &mut parts);
            let (keys, extra): (Vec<Expr>, Vec<Expr>) =
                parts.into_iter().partition(is_column_equality);
            if extra.is_empty() {
                continue;
            }
            if !is_left || keys.is_empty() {
                return Err(format!(
                    "outer join conditions other than column equalities are not supported here: {}",
                    extra
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" AND ")
                ));
            }
            let Some(name) = qualifier(&join.relation) else {
                return Err("LEFT JOIN with extra conditions needs a named table".to_owned());
            };
            let right_columns = match &join.relation {
                TableFactor::Table { name: table, .. } => {
                    let table = table.0.last().map(|p| p.to_string()).unwrap_or_default();
                    let table = table.trim_matches('"').to_lowercase();
                    names.table_columns.get(&table).cloned().unwrap_or_default()
                }
                _ => HashSet::new(),
            };
            if let Some(bad) = extra.iter().find(|e| !reads_only(e, &name, &right_columns)) {
                return Err(format!(
                    "a LEFT JOIN ... ON condition that reads the left table is not supported: {bad}; \
                     move it to WHERE or into a CASE in the select list"
                ));
            }
            let condition = extra
                .iter()
                .map(|e| format!("({e})"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let relation = &join.relation;
            let alias = match relation {
                TableFactor::Table { alias: Some(a), .. } => a.name.to_string(),
                TableFactor::Table { name, .. } => {
                    name.0.last().map(|p| p.to_string()).unwrap_or_default()
                }
                _ => return Err("LEFT JOIN with extra conditions needs a table".to_owned()),
            };
            join.relation = parse_factor(&format!(
                "(SELECT * FROM {relation} WHERE {condition}) AS {alias}"
            ))?;
            *on = keys
                .into_iter()
                .reduce(|l, r| Expr::BinaryOp {
                    left: Box::new(l),
                    op: BinaryOperator::And,
                    right: Box::new(r),
                })
                .ok_or_else(|| "internal rewrite failed".to_owned())?;
        }
    }
    Ok(())
}
