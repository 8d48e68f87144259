//! Subqueries in WHERE, bound as joins (never run once per row).
//!
//! A WHERE is bound over its FROM's rows. Each subquery in it becomes a relation joined to
//! those rows (an *attachment*), and the subquery's value a column of the joined rows:
//! - `(SELECT ...)` as a value: the subquery's one column, reduced to its single value
//!   ([`AggregateFunction::Single`]: NULL over no rows, an error over two or more), cross-joined;
//! - `EXISTS (SELECT ...)`: the subquery's row count, cross-joined; the value is `count > 0`;
//! - `x [NOT] IN (SELECT v ...)`: the subquery's distinct `v`s with a mark, left-joined on
//!   `x = v`, and its row and non-NULL counts, cross-joined. The value is SQL's three-valued
//!   one: TRUE on a match; FALSE when nothing matched and the subquery is empty; NULL when
//!   nothing matched and `x` is NULL or the subquery holds a NULL; FALSE otherwise. `NOT IN`
//!   is its negation, so `x NOT IN (subquery with a NULL)` keeps no row, as the standard says.
//!
//! A top-level `x IN (SELECT v ...)` conjunct of WHERE (the common form) is a semi join on
//! `x = v` instead: the rows it keeps are the same, and no mark is computed.
//!
//! The subqueries are bound on their own. One that reads the outer query's columns (a
//! correlated subquery) is decorrelated where its WHERE's conditions on the outer query are
//! `inner = outer` equalities among its top conjuncts:
//! - `[NOT] EXISTS` and `IN` at the top of WHERE: semi and anti joins on those equalities
//!   (other conditions over both sides, `l2.k <> l1.k`, are part of the join's condition);
//! - a value, `(SELECT agg(...) FROM ... WHERE inner = outer ...)`: the subquery grouped by the
//!   inner sides, left-joined on the equalities (its value where it has rows, NULL where it
//!   has none, as an aggregate over no rows is; COUNT, which is 0 there, is refused).
//!
//! Other correlated forms say they are not supported yet.

use sqlparser::ast::{
    self, BinaryOperator, Expr as Ast, GroupByExpr, Query, SelectItem, SetExpr, Spanned,
};

use super::{Binder, Result, Scope, binary, compared, expect_boolean, not};
use crate::error::PlanError;
use crate::plan::{
    Aggregate, AggregateFunction, Binary, Expr, ExprKind, Field, JoinKind, JoinStrategy, Literal,
    Plan,
};
use crate::types::SqlType;

/// A relation joined to a WHERE's rows for the subqueries in it.
pub(super) struct Attachment {
    /// The relation.
    plan: Plan,
    /// Cross, or Left for an `IN`'s marks.
    kind: JoinKind,
    /// For a Left join: over the rows so far, then the relation's columns.
    on: Option<Expr>,
}

/// The subqueries of the WHERE being bound: joined, in order, after the FROM's `width` columns.
#[derive(Default)]
pub(super) struct Attached {
    width: usize,
    joined: Vec<Attachment>,
    /// Whether a subquery here may read the outer query's columns (over rows, not groups).
    correlated: bool,
}

impl Attached {
    /// Nothing attached yet, the first attached column numbered `width`.
    pub(super) fn after(width: usize) -> Self {
        Self {
            width,
            joined: Vec::new(),
            correlated: false,
        }
    }

    /// The same, where subqueries may read the outer query's columns or not.
    pub(super) fn correlated(mut self, allowed: bool) -> Self {
        self.correlated = allowed;
        self
    }

    /// The relations attached, in order.
    pub(super) fn into_joined(self) -> Vec<Attachment> {
        self.joined
    }

    /// The position the next attached relation's first column takes.
    fn next(&self) -> usize {
        self.width
            + self
                .joined
                .iter()
                .map(|a| a.plan.fields().len())
                .sum::<usize>()
    }
}

fn column(i: usize, ty: SqlType, nullable: bool) -> Expr {
    Expr {
        kind: ExprKind::Column(i),
        ty,
        nullable,
    }
}

fn literal_bool(v: bool) -> Expr {
    Expr {
        kind: ExprKind::Literal(Literal::Boolean(v)),
        ty: SqlType::Boolean,
        nullable: false,
    }
}

fn compare(op: Binary, l: Expr, r: Expr) -> Expr {
    Expr {
        nullable: l.nullable || r.nullable,
        kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
        ty: SqlType::Boolean,
    }
}

fn is_null(e: Expr, negated: bool) -> Expr {
    Expr {
        kind: ExprKind::IsNull {
            expr: Box::new(e),
            negated,
        },
        ty: SqlType::Boolean,
        nullable: false,
    }
}

fn or(l: Expr, r: Expr) -> Expr {
    compare(Binary::Or, l, r)
}

fn int(n: i64) -> Expr {
    Expr {
        kind: ExprKind::Literal(Literal::Integer(n)),
        ty: SqlType::BigInt,
        nullable: false,
    }
}

fn aggregate(input: Plan, aggregates: Vec<Aggregate>) -> Plan {
    let fields = aggregates
        .iter()
        .enumerate()
        .map(|(i, a)| Field {
            name: format!("$SUB{i}"),
            qualifier: None,
            ty: a.ty,
            nullable: a.function == AggregateFunction::Single,
        })
        .collect();
    Plan::Aggregate {
        input: Box::new(input),
        groups: Vec::new(),
        aggregates,
        fields,
    }
}

fn count_rows() -> Aggregate {
    Aggregate {
        function: AggregateFunction::CountRows,
        argument: None,
        distinct: false,
        ty: SqlType::BigInt,
    }
}

/// The conjuncts of a WHERE as written (through parentheses).
pub(super) fn conjuncts<'a>(e: &'a Ast, out: &mut Vec<&'a Ast>) {
    match e {
        Ast::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Ast::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

/// `predicate` over `plan`'s rows with `joined` joined after them, its attached columns
/// numbered from `base` while bound (HAVING's) and renumbered here to follow `plan`'s; the
/// rows narrowed back to `plan`'s columns.
pub(super) fn filter_joined(
    plan: Plan,
    predicate: Expr,
    joined: Vec<Attachment>,
    base: usize,
) -> Plan {
    if joined.is_empty() {
        return Plan::Filter {
            input: Box::new(plan),
            predicate,
        };
    }
    let own = plan.fields().to_vec();
    let width = own.len();
    let renumber = |i: usize| if i >= base { width + (i - base) } else { i };
    let plan = join_all(plan, joined, &renumber);
    Plan::Project {
        input: Box::new(Plan::Filter {
            input: Box::new(plan),
            predicate: predicate.remap(&renumber),
        }),
        exprs: own
            .iter()
            .enumerate()
            .map(|(i, f)| Expr::column(i, f))
            .collect(),
        fields: own,
    }
}

/// `plan` with each attached relation joined after it, in order; their conditions'
/// columns renumbered by `renumber`.
pub(super) fn join_all(
    plan: Plan,
    joined: Vec<Attachment>,
    renumber: &dyn Fn(usize) -> usize,
) -> Plan {
    let mut plan = plan;
    for a in joined {
        let mut fields = plan.fields().to_vec();
        let nullable = a.kind == JoinKind::Left;
        fields.extend(a.plan.fields().iter().cloned().map(|mut f| {
            f.nullable |= nullable;
            f
        }));
        plan = Plan::Join {
            left: Box::new(plan),
            strategy: JoinStrategy::Hash,
            right: Box::new(a.plan),
            kind: a.kind,
            on: a.on.map(|on| on.remap(renumber)),
            fields,
        };
    }
    plan
}

/// Whether `e` calls COUNT (over no rows it is 0, not NULL).
fn counts(e: &Ast) -> bool {
    use std::ops::ControlFlow;
    struct Finder(bool);
    impl ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Ast) -> ControlFlow<()> {
            if let Ast::Function(f) = e
                && f.name.to_string().eq_ignore_ascii_case("count")
            {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut finder = Finder(false);
    let _ = ast::Visit::visit(e, &mut finder);
    finder.0
}

/// Whether binding a subquery failed because it reads the outer query's columns.
fn is_correlation(e: &PlanError) -> bool {
    matches!(e, PlanError::User { message, .. } if message.contains(CORRELATED))
}

/// A join key of a decorrelated subquery: the outer query's side, and the position and field
/// of the subquery's side among the relation's columns.
type Key = (Expr, (usize, Field));

/// What a subquery that reads the outer query's columns is told, when it cannot be bound.
const CORRELATED: &str = "correlated subqueries are not supported";

/// A correlated subquery's WHERE, split: its conditions on its own rows, and its
/// `inner = outer` equalities (the outer side bound, the inner side as written).
type Split = (Vec<Ast>, Vec<(Expr, Ast)>);

/// `outer = inner`, the inner side a column of the relation joined after `width` columns.
fn inner_key(outer: Expr, inner: (usize, Field), width: usize, at: &Ast) -> Result<Expr> {
    let (i, field) = inner;
    binary(
        &BinaryOperator::Eq,
        outer,
        column(width + i, field.ty, field.nullable),
        at,
    )
}

impl Binder<'_> {
    /// A correlated subquery as a relation to join, with the keys it joins on: each
    /// `inner = outer` equality among the top conjuncts of its WHERE becomes a key (the outer
    /// side bound over `outer`, the inner side a column added to the subquery's rows); the
    /// other conjuncts must read the subquery's own rows only. The subquery must be a plain
    /// SELECT (no grouping, DISTINCT, ORDER BY or LIMIT); anything else is refused with
    /// `refused`, the error binding it on its own gave.
    fn decorrelate(
        &mut self,
        query: &Query,
        outer: &[Field],
        at: &Ast,
        refused: PlanError,
    ) -> Result<(Plan, Vec<Key>, Option<Expr>)> {
        let SetExpr::Select(select) = query.body.as_ref() else {
            return Err(refused);
        };
        let plain = query.with.is_none()
            && query.order_by.is_none()
            && query.limit_clause.is_none()
            && select.distinct.is_none()
            && select.having.is_none()
            && matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty())
            && !select.projection.iter().any(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    super::has_aggregate(e)
                }
                _ => false,
            });
        let Some(condition) = select.selection.as_ref().filter(|_| plain) else {
            return Err(refused);
        };
        let attached = self.attached.take();
        let windows = self.windows.take();
        let found = self.decorrelate_select(select, condition, outer, at);
        self.attached = attached;
        self.windows = windows;
        found
    }

    fn decorrelate_select(
        &mut self,
        select: &ast::Select,
        condition: &Ast,
        outer: &[Field],
        at: &Ast,
    ) -> Result<(Plan, Vec<Key>, Option<Expr>)> {
        let from = self.from(&select.from)?;
        let inner: Vec<Field> = from.fields().to_vec();
        let mut parts = Vec::new();
        conjuncts(condition, &mut parts);
        let mut own: Option<Expr> = None;
        let mut keys: Vec<(Expr, Expr)> = Vec::new();
        // Conditions over both the outer query's columns and the subquery's (numbered as the
        // outer ones, then the subquery's own).
        let mut both: Vec<Field> = outer.to_vec();
        both.extend(inner.iter().cloned());
        let mut residual: Option<Expr> = None;
        for part in parts {
            if let Ok(e) = self.expr(part, &mut Scope::new(&inner)) {
                let e = expect_boolean(e, part)?;
                own = Some(match own {
                    None => e,
                    Some(o) => compare(Binary::And, o, e),
                });
                continue;
            }
            let pair = self
                .correlation(part, &inner, outer)
                .map(|(o, _, i)| (o, i));
            let Some((o, i)) = pair else {
                match self
                    .expr(part, &mut Scope::new(&both))
                    .and_then(|e| expect_boolean(e, part))
                {
                    Ok(e) => {
                        residual = Some(match residual {
                            None => e,
                            Some(r) => compare(Binary::And, r, e),
                        });
                        continue;
                    }
                    Err(_) => {
                        return Err(PlanError::user(
                            format!(
                                "a correlated subquery's conditions on the outer query must \
                                 read the outer query's columns and its own; {CORRELATED} \
                                 otherwise yet"
                            ),
                            part.span(),
                        ));
                    }
                }
            };
            // Both sides in their common type, as the equality compares them.
            keys.push(compared(o, i, part)?);
        }
        if keys.is_empty() {
            return Err(PlanError::user(
                format!("{CORRELATED} in this form yet"),
                at.span(),
            ));
        }
        let mut plan = from;
        if let Some(predicate) = own {
            plan = Plan::Filter {
                input: Box::new(plan),
                predicate,
            };
        }
        // The subquery's value (for IN: its one SELECT item), then each key's inner side.
        let mut exprs = Vec::new();
        if let [SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }] =
            select.projection.as_slice()
        {
            exprs.push(self.expr(e, &mut Scope::new(&inner))?);
        } else if matches!(at, Ast::InSubquery { .. }) {
            return Err(PlanError::user(
                "a subquery used as a value must return one column",
                at.span(),
            ));
        } else {
            exprs.push(literal_bool(true));
        }
        let first_key = exprs.len();
        let mut outer_sides = Vec::new();
        for (o, i) in keys {
            outer_sides.push(o);
            exprs.push(i);
        }
        // Every column of the subquery's rows after the keys, for the conditions over both.
        let first_own = exprs.len();
        if residual.is_some() {
            exprs.extend(inner.iter().enumerate().map(|(k, f)| Expr::column(k, f)));
        }
        let width = outer.len();
        let residual = residual.map(|r| {
            r.remap(&|i| {
                if i < width {
                    i
                } else {
                    width + first_own + (i - width)
                }
            })
        });
        let fields: Vec<Field> = exprs
            .iter()
            .enumerate()
            .map(|(k, e)| Field {
                name: format!("$KEY{k}"),
                qualifier: None,
                ty: e.ty,
                nullable: e.nullable,
            })
            .collect();
        let plan = Plan::Project {
            input: Box::new(plan),
            exprs,
            fields: fields.clone(),
        };
        let keys = outer_sides
            .into_iter()
            .enumerate()
            .map(|(k, o)| (o, (first_key + k, fields[first_key + k].clone())))
            .collect();
        Ok((plan, keys, residual))
    }

    /// Binds a subquery on its own; `at` is the expression it is part of.
    fn subquery(&mut self, query: &Query, at: &Ast) -> Result<Plan> {
        self.isolated(query).and_then(|plan| {
            if plan.fields().len() == 1 || matches!(at, Ast::Exists { .. }) {
                Ok(plan)
            } else {
                Err(PlanError::user(
                    format!(
                        "a subquery used as a value must return one column, not {}",
                        plan.fields().len()
                    ),
                    at.span(),
                ))
            }
        })
    }

    /// Binds `query` with none of the outer query's WHERE state.
    fn isolated(&mut self, query: &Query) -> Result<Plan> {
        let attached = self.attached.take();
        let windows = self.windows.take();
        let bound = self.query(query);
        self.attached = attached;
        self.windows = windows;
        bound.map_err(|e| match e {
            PlanError::User {
                message,
                at: position,
            } if message.starts_with("column '") || message.contains("not found in FROM") => {
                PlanError::User {
                    message: format!(
                        "{message}: a subquery cannot read the outer query's columns yet \
                         (correlated subqueries are not supported)"
                    ),
                    at: position,
                }
            }
            other => other,
        })
    }

    /// A correlated subquery used as a value (see the module docs): grouped by the inner
    /// sides of its `inner = outer` equalities and left-joined on them.
    fn correlated_value(
        &mut self,
        query: &Query,
        outer: &[Field],
        at: &Ast,
        refused: PlanError,
    ) -> Result<Expr> {
        let SetExpr::Select(select) = query.body.as_ref() else {
            return Err(refused);
        };
        let value = match select.projection.as_slice() {
            [SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }] => e,
            _ => return Err(refused),
        };
        let plain = query.with.is_none()
            && query.order_by.is_none()
            && query.limit_clause.is_none()
            && select.distinct.is_none()
            && select.having.is_none()
            && matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty())
            && super::has_aggregate(value);
        let Some(condition) = select.selection.as_ref().filter(|_| plain) else {
            return Err(refused);
        };
        if counts(value) {
            return Err(PlanError::user(
                format!(
                    "a correlated subquery whose value counts rows is not supported yet \
                     ({CORRELATED} in this form)"
                ),
                at.span(),
            ));
        }
        // Which conditions read the subquery's rows only, and which are `inner = outer`.
        let attached = self.attached.take();
        let windows = self.windows.take();
        let split = self.split_correlation(select, condition, outer);
        self.attached = attached;
        self.windows = windows;
        let (own, keys) = split?;
        if keys.is_empty() {
            return Err(refused);
        }
        // The subquery grouped by the keys' inner sides: its value, then each inner side.
        let mut grouped = select.as_ref().clone();
        grouped.selection = own.into_iter().reduce(|a, b| Ast::BinaryOp {
            left: Box::new(a),
            op: BinaryOperator::And,
            right: Box::new(b),
        });
        grouped.group_by =
            GroupByExpr::Expressions(keys.iter().map(|(_, i)| i.clone()).collect(), Vec::new());
        grouped.projection = std::iter::once(SelectItem::UnnamedExpr(value.clone()))
            .chain(keys.iter().map(|(_, i)| SelectItem::UnnamedExpr(i.clone())))
            .collect();
        let mut rewritten = query.clone();
        *rewritten.body = SetExpr::Select(Box::new(grouped));
        let plan = self.isolated(&rewritten)?;
        let first = self.attached.as_ref().map_or(0, Attached::next);
        let fields = plan.fields().to_vec();
        let mut on: Option<Expr> = None;
        for (k, (o, _)) in keys.into_iter().enumerate() {
            let key = inner_key(o, (1 + k, fields[1 + k].clone()), first, at)?;
            on = Some(match on {
                None => key,
                Some(all) => compare(Binary::And, all, key),
            });
        }
        let ty = fields[0].ty;
        let at = self.attach(
            at,
            Attachment {
                plan,
                kind: JoinKind::Left,
                on,
            },
        )?;
        Ok(column(at, ty, true))
    }

    /// A correlated `[NOT] EXISTS` inside a condition (under `OR`, `NOT`, `CASE`): the
    /// subquery's distinct key values with a mark, left-joined on its `inner = outer`
    /// equalities; it exists where the mark is there.
    fn correlated_exists(
        &mut self,
        query: &Query,
        outer: &[Field],
        at: &Ast,
        negated: bool,
        refused: PlanError,
    ) -> Result<Expr> {
        let (plan, keys, residual) = self.decorrelate(query, outer, at, refused)?;
        if residual.is_some() {
            return Err(PlanError::user(
                format!(
                    "a correlated EXISTS inside a condition may compare the outer query's \
                     columns by equality only; {CORRELATED} in this form yet"
                ),
                at.span(),
            ));
        }
        // Its columns: the mark (TRUE), then the keys' inner sides; one row per key.
        let fields = plan.fields().to_vec();
        let mut exprs = vec![literal_bool(true)];
        exprs.extend(
            fields
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, f)| Expr::column(i, f)),
        );
        let mut marked_fields = fields;
        marked_fields[0] = Field {
            name: "$MARK".into(),
            qualifier: None,
            ty: SqlType::Boolean,
            nullable: false,
        };
        let plan = Plan::Distinct {
            input: Box::new(Plan::Project {
                input: Box::new(plan),
                exprs,
                fields: marked_fields,
            }),
        };
        let first = self.attached.as_ref().map_or(0, Attached::next);
        let mut on: Option<Expr> = None;
        for (o, inner) in keys {
            let key = inner_key(o, inner, first, at)?;
            on = Some(match on {
                None => key,
                Some(all) => compare(Binary::And, all, key),
            });
        }
        let marked = self.attach(
            at,
            Attachment {
                plan,
                kind: JoinKind::Left,
                on,
            },
        )?;
        Ok(is_null(column(marked, SqlType::Boolean, true), !negated))
    }

    /// `part` as an `inner = outer` equality (either way round): the outer side bound over
    /// `outer`, the inner side as written and bound over `inner`.
    fn correlation<'a>(
        &mut self,
        part: &'a Ast,
        inner: &[Field],
        outer: &[Field],
    ) -> Option<(Expr, &'a Ast, Expr)> {
        let Ast::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = part
        else {
            return None;
        };
        let mut sides = |a: &'a Ast, b: &'a Ast| {
            let i = self.expr(a, &mut Scope::new(inner)).ok()?;
            let o = self.expr(b, &mut Scope::new(outer)).ok()?;
            Some((o, a, i))
        };
        sides(left, right).or_else(|| sides(right, left))
    }

    /// The top conjuncts of a correlated subquery's WHERE: those over its own rows, and the
    /// `inner = outer` equalities (the outer side bound over `outer`, the inner side as
    /// written). Anything else is refused.
    fn split_correlation(
        &mut self,
        select: &ast::Select,
        condition: &Ast,
        outer: &[Field],
    ) -> Result<Split> {
        let inner: Vec<Field> = self.from(&select.from)?.fields().to_vec();
        let mut parts = Vec::new();
        conjuncts(condition, &mut parts);
        let mut own = Vec::new();
        let mut keys = Vec::new();
        for part in parts {
            if self.expr(part, &mut Scope::new(&inner)).is_ok() {
                own.push(part.clone());
                continue;
            }
            let pair = self
                .correlation(part, &inner, outer)
                .map(|(o, a, _)| (o, a.clone()));
            match pair {
                Some(key) => keys.push(key),
                None => {
                    return Err(PlanError::user(
                        format!(
                            "a correlated subquery used as a value may compare the outer \
                             query's columns by equality only ('inner = outer'); \
                             {CORRELATED} otherwise yet"
                        ),
                        part.span(),
                    ));
                }
            }
        }
        Ok((own, keys))
    }

    /// Whether the subqueries being bound may read the outer query's columns (over the
    /// FROM's rows: WHERE, and the SELECT list of a query without grouping).
    fn may_correlate(&self) -> bool {
        self.attached.as_ref().is_some_and(|a| a.correlated)
    }

    fn attach(&mut self, at: &Ast, attachment: Attachment) -> Result<usize> {
        let Some(attached) = self.attached.as_mut() else {
            return Err(PlanError::user(
                "subqueries are not supported here yet",
                at.span(),
            ));
        };
        let first = attached.next();
        attached.joined.push(attachment);
        Ok(first)
    }

    /// Binds a subquery node of an expression (see the module docs).
    pub(super) fn subquery_expr(&mut self, e: &Ast, scope: &mut Scope<'_>) -> Result<Expr> {
        if self.attached.is_none() {
            return Err(PlanError::user(
                "subqueries are not supported here yet",
                e.span(),
            ));
        }
        match e {
            Ast::Subquery(query) => {
                let plan = match self.subquery(query, e) {
                    Ok(plan) => plan,
                    Err(refused) if is_correlation(&refused) && self.may_correlate() => {
                        let outer = scope.fields.to_vec();
                        return self.correlated_value(query, &outer, e, refused);
                    }
                    Err(other) => return Err(other),
                };
                let value = &plan.fields()[0];
                let ty = value.ty;
                let single = Aggregate {
                    function: AggregateFunction::Single,
                    argument: Some(column(0, ty, value.nullable)),
                    distinct: false,
                    ty,
                };
                let at = self.attach(
                    e,
                    Attachment {
                        plan: aggregate(plan, vec![single]),
                        kind: JoinKind::Cross,
                        on: None,
                    },
                )?;
                Ok(column(at, ty, true))
            }
            Ast::Exists { subquery, negated } => {
                let plan = match self.subquery(subquery, e) {
                    Ok(plan) => plan,
                    Err(refused) if is_correlation(&refused) && self.may_correlate() => {
                        let outer = scope.fields.to_vec();
                        return self.correlated_exists(subquery, &outer, e, *negated, refused);
                    }
                    Err(other) => return Err(other),
                };
                let at = self.attach(
                    e,
                    Attachment {
                        plan: aggregate(plan, vec![count_rows()]),
                        kind: JoinKind::Cross,
                        on: None,
                    },
                )?;
                let op = if *negated { Binary::Eq } else { Binary::Gt };
                Ok(compare(op, column(at, SqlType::BigInt, false), int(0)))
            }
            Ast::InSubquery {
                expr,
                subquery,
                negated,
            } => {
                let x = self.expr(expr, scope)?;
                let plan = self.subquery(subquery, e)?;
                let value = plan.fields()[0].clone();
                // Row and non-NULL counts of the subquery.
                let counts = aggregate(
                    plan.clone(),
                    vec![
                        count_rows(),
                        Aggregate {
                            function: AggregateFunction::Count,
                            argument: Some(column(0, value.ty, value.nullable)),
                            distinct: false,
                            ty: SqlType::BigInt,
                        },
                    ],
                );
                let counted = self.attach(
                    e,
                    Attachment {
                        plan: counts,
                        kind: JoinKind::Cross,
                        on: None,
                    },
                )?;
                // The distinct values with a mark, left-joined on x = v.
                let marks = Plan::Distinct {
                    input: Box::new(Plan::Project {
                        input: Box::new(plan),
                        exprs: vec![column(0, value.ty, value.nullable), literal_bool(true)],
                        fields: vec![
                            Field {
                                name: value.name.clone(),
                                qualifier: None,
                                ty: value.ty,
                                nullable: value.nullable,
                            },
                            Field {
                                name: "$MARK".into(),
                                qualifier: None,
                                ty: SqlType::Boolean,
                                nullable: false,
                            },
                        ],
                    }),
                };
                let first = self.attached.as_ref().map_or(0, Attached::next);
                let on = binary(
                    &BinaryOperator::Eq,
                    x.clone(),
                    column(first, value.ty, value.nullable),
                    e,
                )?;
                let marked = self.attach(
                    e,
                    Attachment {
                        plan: marks,
                        kind: JoinKind::Left,
                        on: Some(on),
                    },
                )?;
                let rows = column(counted, SqlType::BigInt, false);
                let values = column(counted + 1, SqlType::BigInt, false);
                let mark = column(marked + 1, SqlType::Boolean, true);
                let unknown = or(is_null(x, false), compare(Binary::Gt, rows.clone(), values));
                let found = Expr {
                    kind: ExprKind::Case {
                        branches: vec![
                            (is_null(mark, true), literal_bool(true)),
                            (compare(Binary::Eq, rows, int(0)), literal_bool(false)),
                            (
                                unknown,
                                Expr {
                                    kind: ExprKind::Literal(Literal::Null),
                                    ty: SqlType::Boolean,
                                    nullable: true,
                                },
                            ),
                        ],
                        otherwise: Box::new(literal_bool(false)),
                    },
                    ty: SqlType::Boolean,
                    nullable: true,
                };
                Ok(if *negated { not(found) } else { found })
            }
            other => Err(PlanError::user(
                "this kind of subquery is not supported",
                other.span(),
            )),
        }
    }

    /// Binds a WHERE over `plan` (the FROM's rows): its subqueries joined as the module docs
    /// say, its conditions a filter, and the rows narrowed back to the FROM's columns.
    pub(super) fn where_clause(&mut self, plan: Plan, condition: &Ast) -> Result<Plan> {
        let fields = plan.fields().to_vec();
        let width = fields.len();
        let mut parts = Vec::new();
        conjuncts(condition, &mut parts);

        // `x IN (SELECT ...)` and correlated `[NOT] EXISTS` at the top: semi and anti joins,
        // applied after the filter.
        let mut semis: Vec<(Plan, Expr, JoinKind)> = Vec::new();
        let mut rest: Vec<&Ast> = Vec::new();
        for part in parts {
            match part {
                Ast::InSubquery {
                    expr,
                    subquery,
                    negated: false,
                } => {
                    let saved = self.attached.take();
                    let x = self.expr(expr, &mut Scope::new(&fields));
                    self.attached = saved;
                    let x = x?;
                    let (right, keys, residual) = match self.subquery(subquery, part) {
                        Ok(plan) => (plan, None, None),
                        Err(e) if is_correlation(&e) => {
                            let (plan, keys, residual) =
                                self.decorrelate(subquery, &fields, part, e)?;
                            (plan, Some(keys), residual)
                        }
                        Err(e) => return Err(e),
                    };
                    let v = &right.fields()[0];
                    let mut on = binary(
                        &BinaryOperator::Eq,
                        x,
                        column(width, v.ty, v.nullable),
                        part,
                    )?;
                    for (outer, inner) in keys.unwrap_or_default() {
                        on = compare(Binary::And, on, inner_key(outer, inner, width, part)?);
                    }
                    if let Some(residual) = residual {
                        on = compare(Binary::And, on, residual);
                    }
                    semis.push((right, on, JoinKind::Semi));
                }
                Ast::Exists { subquery, negated } => {
                    // An uncorrelated EXISTS is a count joined in below, with the rest.
                    let error = match self.subquery(subquery, part) {
                        Err(e) if is_correlation(&e) => e,
                        _ => {
                            rest.push(part);
                            continue;
                        }
                    };
                    let (right, keys, residual) =
                        self.decorrelate(subquery, &fields, part, error)?;
                    let on = keys
                        .into_iter()
                        .map(|(outer, inner)| inner_key(outer, inner, width, part))
                        .reduce(|a, b| Ok(compare(Binary::And, a?, b?)))
                        .ok_or_else(|| {
                            PlanError::user("a correlated EXISTS needs a condition", part.span())
                        })??;
                    let on = match residual {
                        Some(residual) => compare(Binary::And, on, residual),
                        None => on,
                    };
                    let kind = if *negated {
                        JoinKind::Anti
                    } else {
                        JoinKind::Semi
                    };
                    semis.push((right, on, kind));
                }
                _ => rest.push(part),
            }
        }

        // Conditions without subqueries filter the FROM's rows directly (where the join pass
        // finds the FROM's join conditions); those with subqueries filter them once joined.
        let outer = self
            .attached
            .replace(Attached::after(width).correlated(true));
        let mut plain: Option<Expr> = None;
        let mut with_subqueries: Option<Expr> = None;
        let mut bound = Ok(());
        for part in rest {
            let before = self.attached.as_ref().map_or(0, |a| a.joined.len());
            match self
                .expr(part, &mut Scope::new(&fields))
                .and_then(|e| expect_boolean(e, part))
            {
                Ok(e) => {
                    let after = self.attached.as_ref().map_or(0, |a| a.joined.len());
                    let into = if after > before {
                        &mut with_subqueries
                    } else {
                        &mut plain
                    };
                    *into = Some(match into.take() {
                        None => e,
                        Some(p) => compare(Binary::And, p, e),
                    });
                }
                Err(e) => {
                    bound = Err(e);
                    break;
                }
            }
        }
        let attached = std::mem::replace(&mut self.attached, outer);
        bound?;

        let mut plan = plan;
        if let Some(predicate) = plain {
            plan = Plan::Filter {
                input: Box::new(plan),
                predicate,
            };
        }
        let joined = attached.map(|a| a.joined).unwrap_or_default();
        let narrowed = !joined.is_empty();
        plan = join_all(plan, joined, &|i| i);
        if let Some(predicate) = with_subqueries {
            plan = Plan::Filter {
                input: Box::new(plan),
                predicate,
            };
        }
        if narrowed {
            plan = Plan::Project {
                input: Box::new(plan),
                exprs: fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Expr::column(i, f))
                    .collect(),
                fields: fields.clone(),
            };
        }
        for (right, on, kind) in semis {
            plan = Plan::Join {
                left: Box::new(plan),
                strategy: JoinStrategy::Hash,
                right: Box::new(right),
                kind,
                on: Some(on),
                fields: fields.clone(),
            };
        }
        Ok(plan)
    }
}
