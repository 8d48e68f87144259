//! Binding: sqlparser's AST of one query, resolved against a [`Catalog`] into a typed [`Plan`].
//!
//! Names follow Calcite as Kylin configures it: unquoted names match ignoring case and are
//! reported upper-cased (an alias) or as the catalog spells them (a column); quoted names match
//! exactly and keep their case; an unnamed expression is `EXPR$<position>`. Only what the
//! catalog holds binds: a relation is a table of the project or a CTE of the query, so the
//! plan can read nothing else on any engine. Types are fixed here ([`crate::types`]): a
//! comparison's sides meet in their common type (a string literal compared with a decimal
//! column is converted to a decimal, never the column to a string).

use sqlparser::ast::{
    self, BinaryOperator, CeilFloorKind, DataType, DateTimeField, Distinct, Expr as Ast,
    FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, JoinConstraint,
    JoinOperator, LimitClause, ObjectNamePart, OrderByKind, Query, SelectItem, SetExpr, Spanned,
    TableFactor, TableWithJoins, UnaryOperator, Value,
};

use sqlparser::tokenizer::Span;

use crate::catalog::{Case, Catalog, Lookup, Relation, resolve};
use crate::error::{PlanError, Position};
use crate::plan::{
    Aggregate, AggregateFunction, Binary, Expr, ExprKind, Field, Frame, JoinKind, JoinStrategy,
    Literal, Plan, Scalar, SortKey, TimeUnit, Unary, Window, WindowFunction,
};
use crate::types::{self, Arithmetic, SqlType};

mod subquery;

type Result<T> = std::result::Result<T, PlanError>;

/// How an identifier was written.
fn case_of(ident: &Ident) -> Case {
    if ident.quote_style.is_some() {
        Case::Quoted
    } else {
        Case::Unquoted
    }
}

/// The label Calcite gives a name as written: unquoted upper-cased, quoted as is.
fn label(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_uppercase()
    }
}

/// Why a query body other than a SELECT, a set operation or a parenthesized query is refused.
fn query_body(body: &SetExpr) -> PlanError {
    match body {
        SetExpr::Table(table) => PlanError::user(
            format!(
                "'{table}' is not supported; write SELECT * FROM {}",
                table.table_name.as_deref().unwrap_or("the table")
            ),
            body.span(),
        ),
        other => unsupported("this kind of query body", other.span()),
    }
}

fn unsupported(what: &str, at: Span) -> PlanError {
    PlanError::user(format!("{what} is not supported yet"), at)
}

/// A CTE in scope: its name as written and its bound plan.
#[derive(Clone)]
struct Cte {
    name: Ident,
    plan: Plan,
}

/// How deep views may read views: past it, a view is taken to read itself.
const MAX_VIEW_DEPTH: usize = 16;

/// Where window functions' columns are numbered while a SELECT is bound, before the width of
/// the rows they extend is known; renumbered once it is.
const WINDOW_COLUMNS: usize = 1 << 40;

/// Where the columns of the SELECT list's (and ORDER BY's) subqueries are numbered while they
/// are bound: renumbered to follow the rows they are joined to (the FROM's, or the groups').
const SELECT_COLUMNS: usize = 1 << 42;

/// Where the columns of HAVING's subqueries are numbered while it is bound (the groups'
/// width is known only once every aggregate is): renumbered to follow the groups' columns.
const HAVING_COLUMNS: usize = 1 << 41;

/// Binds queries against one catalog.
pub struct Binder<'a> {
    catalog: &'a Catalog,
    /// CTEs visible where binding is, innermost last.
    ctes: Vec<Cte>,
    /// Views being bound around this binder (0 for the query itself).
    depth: usize,
    /// The window functions of the SELECT list and ORDER BY being bound (`None` elsewhere,
    /// where window functions are not allowed).
    windows: Option<Vec<Window>>,
    /// The subqueries of the WHERE being bound (`None` elsewhere, where subqueries are not
    /// supported yet).
    attached: Option<subquery::Attached>,
}

impl<'a> Binder<'a> {
    /// A binder over `catalog`.
    pub fn new(catalog: &'a Catalog) -> Self {
        Self {
            catalog,
            ctes: Vec::new(),
            depth: 0,
            windows: None,
            attached: None,
        }
    }

    /// Binds a whole query: its CTEs, its body, ORDER BY, LIMIT and OFFSET.
    pub fn query(&mut self, query: &Query) -> Result<Plan> {
        let before = self.ctes.len();
        let bound = self.query_inner(query);
        self.ctes.truncate(before);
        bound
    }

    fn query_inner(&mut self, query: &Query) -> Result<Plan> {
        if let Some(with) = &query.with {
            if with.recursive {
                return Err(unsupported("WITH RECURSIVE", with.span()));
            }
            for cte in &with.cte_tables {
                let plan = self.query(&cte.query)?;
                let plan = rename_columns(plan, &cte.alias.columns, cte.alias.span())?;
                self.ctes.push(Cte {
                    name: cte.alias.name.clone(),
                    plan,
                });
            }
        }
        let order_by = match &query.order_by {
            None => Vec::new(),
            Some(order) => match &order.kind {
                OrderByKind::Expressions(items) => items.clone(),
                OrderByKind::All(_) => return Err(unsupported("ORDER BY ALL", order.span())),
            },
        };
        let plan = match query.body.as_ref() {
            SetExpr::Select(select) => self.select(select, &order_by)?,
            SetExpr::Query(inner) if query.order_by.is_none() && query.limit_clause.is_none() => {
                return self.query(inner);
            }
            body @ SetExpr::SetOperation { .. } => {
                let plan = self.set_body(body)?;
                sort_outputs(plan, &order_by)?
            }
            other => return Err(query_body(other)),
        };
        self.limit(plan, query.limit_clause.as_ref())
    }

    /// An operand of a set operation: a SELECT, a parenthesized query, or another operation.
    fn set_body(&mut self, body: &SetExpr) -> Result<Plan> {
        match body {
            SetExpr::Select(select) => self.select(select, &[]),
            SetExpr::Query(query) => self.query(query),
            SetExpr::SetOperation {
                left,
                op: ast::SetOperator::Union,
                set_quantifier,
                right,
            } => {
                let all = match set_quantifier {
                    ast::SetQuantifier::All => true,
                    ast::SetQuantifier::Distinct | ast::SetQuantifier::None => false,
                    _ => return Err(unsupported("UNION BY NAME", body.span())),
                };
                let left = self.set_body(left)?;
                let right = self.set_body(right)?;
                union(left, right, all, body)
            }
            SetExpr::SetOperation {
                left,
                op: op @ (ast::SetOperator::Intersect | ast::SetOperator::Except),
                set_quantifier,
                right,
            } => {
                if !matches!(
                    set_quantifier,
                    ast::SetQuantifier::Distinct | ast::SetQuantifier::None
                ) {
                    return Err(unsupported(&format!("{op} {set_quantifier}"), body.span()));
                }
                let left = self.set_body(left)?;
                let right = self.set_body(right)?;
                let kind = if matches!(op, ast::SetOperator::Intersect) {
                    JoinKind::Semi
                } else {
                    JoinKind::Anti
                };
                set_match(left, right, kind, body)
            }
            SetExpr::SetOperation { op, .. } => Err(unsupported(&format!("{op}"), body.span())),
            other => Err(query_body(other)),
        }
    }

    fn limit(&self, plan: Plan, clause: Option<&LimitClause>) -> Result<Plan> {
        let Some(clause) = clause else {
            return Ok(plan);
        };
        let count = |e: &Ast| -> Result<u64> {
            match e {
                Ast::Value(v) => match &v.value {
                    Value::Number(n, _) => n.parse::<u64>().map_err(|_| {
                        PlanError::user(format!("'{n}' is not a row count"), e.span())
                    }),
                    _ => Err(PlanError::user("a row count must be a number", e.span())),
                },
                _ => Err(PlanError::user("a row count must be a number", e.span())),
            }
        };
        let (fetch, offset) = match clause {
            LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            } => {
                if let Some(first) = limit_by.first() {
                    return Err(unsupported("LIMIT BY", first.span()));
                }
                let fetch = match limit {
                    Some(Ast::Value(v)) if matches!(v.value, Value::Null) => None,
                    Some(e) => Some(count(e)?),
                    None => None,
                };
                let offset = offset.as_ref().map(|o| count(&o.value)).transpose()?;
                (fetch, offset.unwrap_or(0))
            }
            LimitClause::OffsetCommaLimit { offset, limit } => {
                (Some(count(limit)?), count(offset)?)
            }
        };
        Ok(Plan::Limit {
            input: Box::new(plan),
            offset,
            fetch,
        })
    }

    /// Binds FROM: comma-separated items become cross joins (WHERE links them).
    fn from(&mut self, from: &[TableWithJoins]) -> Result<Plan> {
        let mut plan: Option<Plan> = None;
        for item in from {
            let mut joined = self.table_factor(&item.relation)?;
            for join in &item.joins {
                let right = self.table_factor(&join.relation)?;
                let (kind, constraint) = match &join.join_operator {
                    JoinOperator::Join(c) | JoinOperator::Inner(c) => (JoinKind::Inner, Some(c)),
                    JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, Some(c)),
                    JoinOperator::Right(c) | JoinOperator::RightOuter(c) => {
                        (JoinKind::Right, Some(c))
                    }
                    JoinOperator::FullOuter(c) => (JoinKind::Full, Some(c)),
                    JoinOperator::CrossJoin(_) => (JoinKind::Cross, None),
                    _ => return Err(unsupported("this kind of join", join.span())),
                };
                joined = self.join(joined, right, kind, constraint)?;
            }
            plan = Some(match plan {
                None => joined,
                Some(left) => self.join(left, joined, JoinKind::Cross, None)?,
            });
        }
        Ok(plan.unwrap_or(Plan::Single))
    }

    fn join(
        &mut self,
        left: Plan,
        right: Plan,
        kind: JoinKind,
        constraint: Option<&JoinConstraint>,
    ) -> Result<Plan> {
        let mut fields: Vec<Field> = left.fields().to_vec();
        let nullable_left = matches!(kind, JoinKind::Right | JoinKind::Full);
        let nullable_right = matches!(kind, JoinKind::Left | JoinKind::Full);
        for f in &mut fields {
            f.nullable |= nullable_left;
        }
        fields.extend(right.fields().iter().cloned().map(|mut f| {
            f.nullable |= nullable_right;
            f
        }));
        let on = match constraint {
            None | Some(JoinConstraint::None) if kind == JoinKind::Cross => None,
            Some(JoinConstraint::On(on)) => {
                let mut scope = Scope::new(&fields);
                let bound = self.expr(on, &mut scope)?;
                Some(expect_boolean(bound, on)?)
            }
            Some(other) => return Err(unsupported("this join condition", other.span())),
            None => None,
        };
        Ok(Plan::Join {
            left: Box::new(left),
            strategy: JoinStrategy::Hash,
            right: Box::new(right),
            kind: if on.is_none() && kind == JoinKind::Inner {
                JoinKind::Cross
            } else {
                kind
            },
            on,
            fields,
        })
    }

    fn table_factor(&mut self, factor: &TableFactor) -> Result<Plan> {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let parts: Vec<&Ident> = name
                    .0
                    .iter()
                    .map(ObjectNamePart::as_ident)
                    .collect::<Option<_>>()
                    .ok_or_else(|| unsupported("this table name", name.span()))?;
                let plan = match parts.as_slice() {
                    [table] => match self.cte(table) {
                        Some(plan) => plan,
                        None => self.scan(None, table, name)?,
                    },
                    [schema, table] => self.scan(Some(schema), table, name)?,
                    _ => {
                        return Err(PlanError::user(
                            format!("table '{name}' not found"),
                            name.span(),
                        ));
                    }
                };
                match alias {
                    Some(alias) => {
                        let plan = rename_columns(plan, &alias.columns, alias.span())?;
                        Ok(requalify(plan, &alias.name))
                    }
                    None => Ok(plan),
                }
            }
            TableFactor::Table { name, .. } => Err(PlanError::user(
                format!(
                    "table functions are not allowed: {name}(...); a query reads only the \
                     project's tables"
                ),
                name.span(),
            )),
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                if *lateral {
                    return Err(unsupported("LATERAL", factor.span()));
                }
                let plan = self.query(subquery)?;
                match alias {
                    Some(alias) => {
                        let plan = rename_columns(plan, &alias.columns, alias.span())?;
                        Ok(requalify(plan, &alias.name))
                    }
                    None => Ok(unqualify(plan)),
                }
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias: None,
            } => self.from(std::slice::from_ref(table_with_joins)),
            other => Err(PlanError::user(
                "this kind of FROM item is not supported; a query reads only the project's tables",
                other.span(),
            )),
        }
    }

    /// The CTE `name` refers to, if any (of two CTEs spelled alike, the innermost).
    fn cte(&self, name: &Ident) -> Option<Plan> {
        let mut seen: Vec<&str> = Vec::new();
        let candidates: Vec<(&str, &Cte)> = self
            .ctes
            .iter()
            .rev()
            .filter(|cte| {
                let fresh = !seen.contains(&cte.name.value.as_str());
                seen.push(&cte.name.value);
                fresh
            })
            .map(|cte| (cte.name.value.as_str(), cte))
            .collect();
        let cte = resolve(&name.value, case_of(name), candidates).ok()?;
        Some(requalify(cte.plan.clone(), &cte.name))
    }

    fn scan(
        &self,
        schema: Option<&Ident>,
        table: &Ident,
        written: &ast::ObjectName,
    ) -> Result<Plan> {
        let found = self.catalog.relation(
            schema.map(|s| (s.value.as_str(), case_of(s))),
            (table.value.as_str(), case_of(table)),
        );
        let found = match found {
            Ok(Relation::Table(found)) => found,
            Ok(Relation::View(view)) => return self.view(view, written),
            Err(Lookup::NotFound) => {
                let project = &self.catalog.project;
                let message = if project.is_empty() {
                    format!("table '{written}' not found")
                } else {
                    format!("table '{written}' not found in project '{project}'")
                };
                return Err(PlanError::user(message, written.span()));
            }
            Err(Lookup::Ambiguous(names)) => {
                return Err(PlanError::user(
                    format!(
                        "table name '{written}' is ambiguous: {}; quote it to say which",
                        names.join(", ")
                    ),
                    written.span(),
                ));
            }
        };
        Ok(Plan::Scan {
            schema: found.schema.clone(),
            table: found.name.clone(),
            fields: found
                .columns
                .iter()
                .map(|c| Field {
                    name: c.name.clone(),
                    qualifier: Some(found.name.clone()),
                    ty: c.ty,
                    nullable: c.nullable,
                })
                .collect(),
        })
    }

    /// Binds a view where `written` reads it: its query on its own (it sees no CTE of the
    /// query reading it), its columns qualified by its name.
    fn view(&self, view: &crate::catalog::View, written: &ast::ObjectName) -> Result<Plan> {
        let invalid = |message: String| {
            PlanError::user(
                format!("view '{}' is invalid: {message}", view.name),
                written.span(),
            )
        };
        if self.depth >= MAX_VIEW_DEPTH {
            return Err(invalid(format!(
                "views read views more than {MAX_VIEW_DEPTH} deep (does it read itself?)"
            )));
        }
        let mut statements =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::GenericDialect {}, &view.sql)
                .map_err(|e| invalid(e.to_string()))?;
        let Some(ast::Statement::Query(query)) = statements.pop().filter(|_| statements.is_empty())
        else {
            return Err(invalid("a view holds one query".to_owned()));
        };
        let mut binder = Binder {
            catalog: self.catalog,
            ctes: Vec::new(),
            depth: self.depth + 1,
            windows: None,
            attached: None,
        };
        let plan = binder.query(&query).map_err(|e| match e {
            // A view read by a view names the innermost one that is invalid, once.
            PlanError::User { message, .. } if message.starts_with("view '") => {
                PlanError::user(message, written.span())
            }
            PlanError::User { message, .. } => invalid(message),
            internal => internal,
        })?;
        Ok(requalify(plan, &Ident::new(view.name.clone())))
    }

    /// Binds one SELECT with the query's ORDER BY (which may name its output columns).
    fn select(&mut self, select: &ast::Select, order_by: &[ast::OrderByExpr]) -> Result<Plan> {
        if select.top.is_some() {
            return Err(unsupported("TOP", select.span()));
        }
        if let Some(having) = select.qualify.as_ref() {
            return Err(unsupported("QUALIFY", having.span()));
        }
        if let Some(Distinct::On(on)) = &select.distinct {
            return Err(unsupported(
                "DISTINCT ON",
                on.first().map_or(select.span(), Spanned::span),
            ));
        }
        let mut plan = self.from(&select.from)?;
        if let Some(condition) = &select.selection {
            plan = self.where_clause(plan, condition)?;
        }
        let group_by: &[Ast] = match &select.group_by {
            GroupByExpr::Expressions(exprs, modifiers) => {
                if let Some(m) = modifiers.first() {
                    return Err(PlanError::user(
                        format!("GROUP BY ... {m} is not supported yet"),
                        select.span(),
                    ));
                }
                exprs
            }
            GroupByExpr::All(_) => return Err(unsupported("GROUP BY ALL", select.span())),
        };
        let aggregated = !group_by.is_empty()
            || select.having.is_some()
            || select.projection.iter().any(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    has_aggregate(e)
                }
                _ => false,
            });
        // What the SELECT list and ORDER BY are bound over: the FROM's rows, or the groups.
        let input_fields = plan.fields().to_vec();
        let mut grouping: Option<Grouping> = None;
        if aggregated {
            let mut scope = Scope::new(&input_fields);
            // ROLLUP, CUBE and GROUPING SETS: the grouping sets, each a list of expressions.
            let (expressions, sets) = grouping_sets(group_by)?;
            let mut groups: Vec<Expr> = Vec::new();
            let mut positions = Vec::new();
            for g in expressions {
                // `GROUP BY 1` names a SELECT item, as in Calcite's lenient conformance.
                let bound = match ordinal(g) {
                    Some(n) => {
                        let item = select.projection.get(n.wrapping_sub(1)).ok_or_else(|| {
                            PlanError::user(
                                format!("GROUP BY position {n} is not in the select list"),
                                g.span(),
                            )
                        })?;
                        match item {
                            SelectItem::UnnamedExpr(e)
                            | SelectItem::ExprWithAlias { expr: e, .. } => {
                                self.expr(e, &mut scope)?
                            }
                            _ => return Err(unsupported("GROUP BY a position of *", g.span())),
                        }
                    }
                    None => match (self.expr(g, &mut scope), g) {
                        (Ok(bound), _) => bound,
                        // `GROUP BY y` where `y` is no input column but a SELECT item's
                        // alias: that item (Calcite's lenient conformance, as Kylin runs).
                        (Err(e), Ast::Identifier(name)) => {
                            let aliased = select.projection.iter().find_map(|item| match item {
                                SelectItem::ExprWithAlias { expr, alias }
                                    if label(alias) == label(name) =>
                                {
                                    Some(expr)
                                }
                                _ => None,
                            });
                            match aliased {
                                Some(expr) if !has_aggregate(expr) => {
                                    self.expr(expr, &mut scope)?
                                }
                                _ => return Err(e),
                            }
                        }
                        (Err(e), _) => return Err(e),
                    },
                };
                positions.push(match groups.iter().position(|k| *k == bound) {
                    Some(at) => at,
                    None => {
                        groups.push(bound);
                        groups.len() - 1
                    }
                });
            }
            let sets = sets.map(|sets| {
                sets.into_iter()
                    .map(|set| set.into_iter().map(|i| positions[i]).collect())
                    .collect()
            });
            grouping = Some(Grouping {
                groups,
                aggregates: Vec::new(),
                input: input_fields.clone(),
                sets,
            });
        }

        // The SELECT list (and ORDER BY): where window functions and subqueries may be. A
        // subquery there may read the outer query's columns only over the FROM's rows.
        let outer_windows = self.windows.replace(Vec::new());
        let outer_attached = self
            .attached
            .replace(subquery::Attached::after(SELECT_COLUMNS).correlated(grouping.is_none()));
        let mut exprs = Vec::new();
        let mut fields = Vec::new();
        for (position, item) in select.projection.iter().enumerate() {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    let bound = self.output_expr(e, &input_fields, grouping.as_mut())?;
                    let name = match item {
                        SelectItem::ExprWithAlias { alias, .. } => label(alias),
                        _ => match e {
                            Ast::Identifier(_) | Ast::CompoundIdentifier(_) => {
                                column_name(&bound, &input_fields, grouping.as_ref())
                                    .unwrap_or_else(|| format!("EXPR${position}"))
                            }
                            _ => format!("EXPR${position}"),
                        },
                    };
                    fields.push(Field {
                        name,
                        qualifier: None,
                        ty: bound.ty,
                        nullable: bound.nullable,
                    });
                    exprs.push(bound);
                }
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    if grouping.is_some() {
                        return Err(PlanError::user(
                            "'*' cannot be selected in a grouped query",
                            item.span(),
                        ));
                    }
                    let qualifier = match item {
                        SelectItem::QualifiedWildcard(kind, _) => Some(kind.to_string()),
                        _ => None,
                    };
                    let mut any = false;
                    for (i, f) in input_fields.iter().enumerate() {
                        let keep = match (&qualifier, &f.qualifier) {
                            (None, _) => true,
                            (Some(q), Some(fq)) => {
                                let q = q.trim_matches('"');
                                q.eq_ignore_ascii_case(fq)
                            }
                            (Some(_), None) => false,
                        };
                        if keep {
                            any = true;
                            exprs.push(Expr::column(i, f));
                            fields.push(Field {
                                qualifier: None,
                                ..f.clone()
                            });
                        }
                    }
                    if !any && qualifier.is_some() {
                        return Err(PlanError::user(
                            format!("{item}: no such table in FROM"),
                            item.span(),
                        ));
                    }
                }
                other => return Err(unsupported("this select item", other.span())),
            }
        }

        // HAVING, then the aggregation node itself. Its subqueries are joined to the groups.
        let mut having = None;
        let mut having_joined = Vec::new();
        if let Some(condition) = &select.having {
            let Some(g) = grouping.as_mut() else {
                return Err(PlanError::internal_grouping());
            };
            // No window function in HAVING: it filters groups before windows are computed.
            let held = self.windows.take();
            let outer = self
                .attached
                .replace(subquery::Attached::after(HAVING_COLUMNS));
            let bound = bind_over_groups(self, condition, g);
            let attached = std::mem::replace(&mut self.attached, outer);
            self.windows = held;
            having = Some(expect_boolean(bound?, condition)?);
            having_joined = attached
                .map(subquery::Attached::into_joined)
                .unwrap_or_default();
        }

        // ORDER BY: an output column (by position, or by name), else an expression over the
        // input, carried as a hidden column and dropped after the sort.
        let mut keys = Vec::new();
        let visible = exprs.len();
        for item in order_by {
            let expr = &item.expr;
            let at = if let Some(n) = ordinal(expr) {
                if n == 0 || n > visible {
                    return Err(PlanError::user(
                        format!("ORDER BY position {n} is not in the select list"),
                        expr.span(),
                    ));
                }
                n - 1
            } else if let Some(at) = output_named(expr, &fields[..visible]) {
                at
            } else {
                let bound = self.output_expr(expr, &input_fields, grouping.as_mut())?;
                match exprs.iter().position(|e| *e == bound) {
                    Some(at) => at,
                    None => {
                        if matches!(select.distinct, Some(Distinct::Distinct)) {
                            return Err(PlanError::user(
                                "with SELECT DISTINCT, ORDER BY expressions must appear in the select list",
                                expr.span(),
                            ));
                        }
                        fields.push(Field {
                            name: format!("$sort{}", exprs.len()),
                            qualifier: None,
                            ty: bound.ty,
                            nullable: bound.nullable,
                        });
                        exprs.push(bound);
                        exprs.len() - 1
                    }
                }
            };
            let descending = item.options.asc == Some(false);
            // NULL is the smallest value (Kylin's `defaultNullCollation` LOW, as Spark):
            // first ascending, last descending.
            let nulls_first = item.options.nulls_first.unwrap_or(!descending);
            keys.push(SortKey {
                expr: Expr::column(at, &fields[at]),
                descending,
                nulls_first,
            });
        }

        let mut windows = std::mem::replace(&mut self.windows, outer_windows).unwrap_or_default();
        let select_joined = std::mem::replace(&mut self.attached, outer_attached)
            .map(subquery::Attached::into_joined)
            .unwrap_or_default();
        if let Some(g) = grouping {
            let mut agg_fields: Vec<Field> = g
                .groups
                .iter()
                .enumerate()
                .map(|(i, e)| Field {
                    name: column_name(e, &g.input, None).unwrap_or_else(|| format!("$g{i}")),
                    qualifier: None,
                    ty: e.ty,
                    nullable: e.nullable,
                })
                .collect();
            agg_fields.extend(g.aggregates.iter().enumerate().map(|(i, a)| Field {
                name: format!("$a{i}"),
                qualifier: None,
                ty: a.ty,
                nullable: !matches!(
                    a.function,
                    AggregateFunction::Count | AggregateFunction::CountRows
                ),
            }));
            let mask_at = agg_fields.len();
            plan = match &g.sets {
                None => Plan::Aggregate {
                    input: Box::new(plan),
                    groups: g.groups,
                    aggregates: g.aggregates,
                    fields: agg_fields,
                },
                Some(sets) => grouped_by_sets(plan, &g.groups, &g.aggregates, &agg_fields, sets),
            };
            // `GROUPING(...)` reads the mask after the aggregates.
            let mask = |i: usize| if i == GROUPING_COLUMN { mask_at } else { i };
            having = having.map(|h| h.remap(&mask));
            renumber_output(&mut exprs, &mut keys, &mut windows, &mask);
            if let Some(predicate) = having {
                plan = subquery::filter_joined(plan, predicate, having_joined, HAVING_COLUMNS);
            }
        }
        // The SELECT list's subqueries joined to its rows.
        if !select_joined.is_empty() {
            let width = plan.fields().len();
            let renumber = |i: usize| {
                if i >= SELECT_COLUMNS {
                    width + (i - SELECT_COLUMNS)
                } else {
                    i
                }
            };
            plan = subquery::join_all(plan, select_joined, &renumber);
            renumber_output(&mut exprs, &mut keys, &mut windows, &renumber);
        }
        if !windows.is_empty() {
            // The windows' columns follow the rows they extend.
            let width = plan.fields().len();
            let renumber = |i: usize| {
                if i >= WINDOW_COLUMNS {
                    width + (i - WINDOW_COLUMNS)
                } else {
                    i
                }
            };
            exprs = exprs.into_iter().map(|e| e.remap(&renumber)).collect();
            keys = keys
                .into_iter()
                .map(|k| SortKey {
                    expr: k.expr.remap(&renumber),
                    ..k
                })
                .collect();
            let mut window_fields = plan.fields().to_vec();
            window_fields.extend(windows.iter().enumerate().map(|(i, w)| Field {
                name: format!("$w{i}"),
                qualifier: None,
                ty: w.ty,
                nullable: true,
            }));
            plan = Plan::Window {
                input: Box::new(plan),
                windows,
                fields: window_fields,
            };
        }
        plan = Plan::Project {
            input: Box::new(plan),
            exprs,
            fields: fields.clone(),
        };
        if matches!(select.distinct, Some(Distinct::Distinct)) {
            plan = Plan::Distinct {
                input: Box::new(plan),
            };
        }
        if !keys.is_empty() {
            plan = Plan::Sort {
                input: Box::new(plan),
                keys,
            };
        }
        if fields.len() > visible {
            let kept = fields[..visible].to_vec();
            plan = Plan::Project {
                input: Box::new(plan),
                exprs: kept
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Expr::column(i, f))
                    .collect(),
                fields: kept,
            };
        }
        Ok(plan)
    }

    /// An expression of the SELECT list or ORDER BY: over the FROM's rows, or over the groups.
    fn output_expr(
        &mut self,
        e: &Ast,
        input: &[Field],
        grouping: Option<&mut Grouping>,
    ) -> Result<Expr> {
        match grouping {
            Some(g) => bind_over_groups(self, e, g),
            None => {
                let mut scope = Scope::new(input);
                self.expr(e, &mut scope)
            }
        }
    }

    /// Binds a scalar expression over `scope` (aggregates are refused here).
    fn expr(&mut self, e: &Ast, scope: &mut Scope<'_>) -> Result<Expr> {
        if let Some(hook) = scope.hook.as_mut()
            && let Some(bound) = hook(e)?
        {
            return Ok(bound);
        }
        match e {
            Ast::Identifier(ident) => scope.column(&[ident], e),
            Ast::CompoundIdentifier(parts) => scope.column(&parts.iter().collect::<Vec<_>>(), e),
            Ast::Nested(inner) => self.expr(inner, scope),
            Ast::Value(v) => literal(&v.value, e),
            Ast::TypedString(typed) => typed_literal(&typed.data_type, &typed.value.value, e),
            Ast::UnaryOp { op, expr } => {
                let inner = self.expr(expr, scope)?;
                match op {
                    UnaryOperator::Not => {
                        let inner = expect_boolean(inner, expr)?;
                        Ok(Expr {
                            ty: SqlType::Boolean,
                            nullable: inner.nullable,
                            kind: ExprKind::Unary(Unary::Not, Box::new(inner)),
                        })
                    }
                    UnaryOperator::Minus => {
                        if !inner.ty.is_numeric() && inner.ty != SqlType::Null {
                            return Err(PlanError::user(
                                format!("cannot negate a value of type {}", inner.ty),
                                e.span(),
                            ));
                        }
                        Ok(Expr {
                            ty: inner.ty,
                            nullable: inner.nullable,
                            kind: ExprKind::Unary(Unary::Negate, Box::new(inner)),
                        })
                    }
                    UnaryOperator::Plus => Ok(inner),
                    _ => Err(unsupported(&format!("the operator {op}"), e.span())),
                }
            }
            Ast::BinaryOp { left, op, right } => {
                let l = self.expr(left, scope)?;
                let r = self.expr(right, scope)?;
                binary(op, l, r, e)
            }
            Ast::IsDistinctFrom(left, right) | Ast::IsNotDistinctFrom(left, right) => {
                // Equality where NULL equals NULL, in the sides' common type.
                let (l, r) = (self.expr(left, scope)?, self.expr(right, scope)?);
                let (l, r) = compared(l, r, e)?;
                let same = Expr {
                    ty: SqlType::Boolean,
                    nullable: false,
                    kind: ExprKind::Binary(Binary::NotDistinct, Box::new(l), Box::new(r)),
                };
                Ok(if matches!(e, Ast::IsDistinctFrom(..)) {
                    not(same)
                } else {
                    same
                })
            }
            Ast::IsNull(inner) | Ast::IsNotNull(inner) => {
                let bound = self.expr(inner, scope)?;
                Ok(Expr {
                    ty: SqlType::Boolean,
                    nullable: false,
                    kind: ExprKind::IsNull {
                        expr: Box::new(bound),
                        negated: matches!(e, Ast::IsNotNull(_)),
                    },
                })
            }
            Ast::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let x = self.expr(expr, scope)?;
                let lo = self.expr(low, scope)?;
                let hi = self.expr(high, scope)?;
                let above = binary(&BinaryOperator::GtEq, x.clone(), lo, e)?;
                let below = binary(&BinaryOperator::LtEq, x, hi, e)?;
                let both = binary(&BinaryOperator::And, above, below, e)?;
                Ok(if *negated { not(both) } else { both })
            }
            Ast::InList {
                expr,
                list,
                negated,
            } => {
                let x = self.expr(expr, scope)?;
                let items = list
                    .iter()
                    .map(|item| self.expr(item, scope))
                    .collect::<Result<Vec<_>>>()?;
                let mut ty = x.ty;
                for item in &items {
                    ty = types::common_type(ty, item.ty).ok_or_else(|| {
                        PlanError::user(
                            format!("IN cannot compare {} with {}", x.ty, item.ty),
                            e.span(),
                        )
                    })?;
                }
                let nullable = x.nullable || items.iter().any(|i| i.nullable);
                Ok(Expr {
                    ty: SqlType::Boolean,
                    nullable,
                    kind: ExprKind::InList {
                        expr: Box::new(cast(x, ty)),
                        list: items.into_iter().map(|i| cast(i, ty)).collect(),
                        negated: *negated,
                    },
                })
            }
            Ast::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => {
                let x = self.expr(expr, scope)?;
                let p = self.expr(pattern, scope)?;
                for side in [&x, &p] {
                    if !matches!(side.ty, SqlType::Varchar | SqlType::Null) {
                        return Err(PlanError::user(
                            format!("LIKE needs strings, not {}", side.ty),
                            e.span(),
                        ));
                    }
                }
                Ok(Expr {
                    ty: SqlType::Boolean,
                    nullable: x.nullable || p.nullable,
                    kind: ExprKind::Like {
                        expr: Box::new(x),
                        pattern: Box::new(p),
                        negated: *negated,
                    },
                })
            }
            Ast::Cast {
                expr, data_type, ..
            } => {
                let inner = self.expr(expr, scope)?;
                let to = sql_type(data_type, e)?;
                Ok(Expr {
                    ty: to,
                    nullable: inner.nullable,
                    kind: ExprKind::Cast(Box::new(inner)),
                })
            }
            Ast::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let operand = operand.as_ref().map(|o| self.expr(o, scope)).transpose()?;
                let mut branches = Vec::new();
                for when in conditions {
                    let condition = self.expr(&when.condition, scope)?;
                    let condition = match &operand {
                        Some(o) => binary(&BinaryOperator::Eq, o.clone(), condition, e)?,
                        None => expect_boolean(condition, &when.condition)?,
                    };
                    branches.push((condition, self.expr(&when.result, scope)?));
                }
                let otherwise = match else_result {
                    Some(x) => self.expr(x, scope)?,
                    None => null_literal(),
                };
                let mut ty = otherwise.ty;
                for (_, then) in &branches {
                    ty = types::common_type(ty, then.ty).ok_or_else(|| {
                        PlanError::user(
                            format!("CASE branches of types {ty} and {} do not meet", then.ty),
                            e.span(),
                        )
                    })?;
                }
                let nullable = otherwise.nullable || branches.iter().any(|(_, t)| t.nullable);
                Ok(Expr {
                    ty,
                    nullable,
                    kind: ExprKind::Case {
                        branches: branches
                            .into_iter()
                            .map(|(c, t)| (c, cast(t, ty)))
                            .collect(),
                        otherwise: Box::new(cast(otherwise, ty)),
                    },
                })
            }
            Ast::Extract { field, expr, .. } => {
                let inner = self.expr(expr, scope)?;
                let f = match field {
                    DateTimeField::Year => Scalar::Year,
                    DateTimeField::Quarter => Scalar::Quarter,
                    DateTimeField::Month => Scalar::Month,
                    DateTimeField::Day => Scalar::DayOfMonth,
                    DateTimeField::Dow | DateTimeField::DayOfWeek => Scalar::DayOfWeek,
                    DateTimeField::Doy | DateTimeField::DayOfYear => Scalar::DayOfYear,
                    DateTimeField::Week(None) => Scalar::Week,
                    DateTimeField::Hour => Scalar::Hour,
                    DateTimeField::Minute => Scalar::Minute,
                    DateTimeField::Second => Scalar::Second,
                    other => return Err(unsupported(&format!("EXTRACT({other})"), e.span())),
                };
                scalar(f, vec![inner], e)
            }
            Ast::Floor {
                expr,
                field: CeilFloorKind::DateTimeField(unit),
            } if *unit != DateTimeField::NoDateTime => {
                // `FLOOR(ts TO MONTH)`: every time grain Superset and Kylin's BI tools send.
                let unit = match unit {
                    DateTimeField::Year => TimeUnit::Year,
                    DateTimeField::Quarter => TimeUnit::Quarter,
                    DateTimeField::Month => TimeUnit::Month,
                    DateTimeField::Week(None) => TimeUnit::Week,
                    DateTimeField::Day => TimeUnit::Day,
                    DateTimeField::Hour => TimeUnit::Hour,
                    DateTimeField::Minute => TimeUnit::Minute,
                    DateTimeField::Second => TimeUnit::Second,
                    other => return Err(unsupported(&format!("FLOOR(... TO {other})"), e.span())),
                };
                let inner = self.expr(expr, scope)?;
                scalar(Scalar::FloorTo(unit), vec![inner], e)
            }
            Ast::Floor { expr, field } | Ast::Ceil { expr, field } => {
                if !matches!(
                    field,
                    CeilFloorKind::DateTimeField(DateTimeField::NoDateTime)
                ) {
                    return Err(unsupported("CEIL to a time unit", e.span()));
                }
                let inner = self.expr(expr, scope)?;
                let f = if matches!(e, Ast::Floor { .. }) {
                    Scalar::Floor
                } else {
                    Scalar::Ceil
                };
                scalar(f, vec![inner], e)
            }
            Ast::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.expr(expr, scope)?];
                args.push(match substring_from {
                    Some(from) => self.expr(from, scope)?,
                    None => int_literal(1),
                });
                if let Some(length) = substring_for {
                    args.push(self.expr(length, scope)?);
                }
                scalar(Scalar::Substring, args, e)
            }
            Ast::Function(function) if function.over.is_some() => self.window(function, e, scope),
            Ast::Function(function) => {
                let name = function_name(function, e)?;
                if aggregate_function(&name).is_some() {
                    return Err(PlanError::user(
                        format!("aggregate function {name} is not allowed here"),
                        e.span(),
                    ));
                }
                let args = plain_args(function, e)?
                    .into_iter()
                    .map(|a| self.expr(a, scope))
                    .collect::<Result<Vec<_>>>()?;
                call(&name, args, e)
            }
            Ast::Subquery(_) | Ast::InSubquery { .. } | Ast::Exists { .. } => {
                self.subquery_expr(e, scope)
            }
            other => Err(unsupported("this expression", other.span())),
        }
    }
}

impl Binder<'_> {
    /// Binds a window function of the SELECT list or ORDER BY: its argument, partition and
    /// order over the same rows as the expression it is in (the groups, in a grouped query);
    /// it stands for a column the window node adds.
    fn window(&mut self, function: &ast::Function, e: &Ast, scope: &mut Scope<'_>) -> Result<Expr> {
        if self.windows.is_none() {
            return Err(PlanError::user(
                "window functions are allowed in SELECT and ORDER BY only",
                e.span(),
            ));
        }
        let Some(ast::WindowType::WindowSpec(spec)) = &function.over else {
            return Err(unsupported("named windows", e.span()));
        };
        let frame = match &spec.window_frame {
            None => Frame::Default,
            Some(frame) => {
                use ast::{WindowFrameBound as Bound, WindowFrameUnits as Units};
                match (&frame.units, &frame.start_bound, &frame.end_bound) {
                    (Units::Range, Bound::Preceding(None), None | Some(Bound::CurrentRow)) => {
                        Frame::Default
                    }
                    (Units::Rows, Bound::Preceding(None), None | Some(Bound::CurrentRow)) => {
                        Frame::RowsToCurrent
                    }
                    (
                        Units::Rows | Units::Range,
                        Bound::Preceding(None),
                        Some(Bound::Following(None)),
                    ) => Frame::Whole,
                    _ => {
                        return Err(unsupported(
                            "this window frame (frames from UNBOUNDED PRECEDING to CURRENT \
                             ROW or UNBOUNDED FOLLOWING are)",
                            e.span(),
                        ));
                    }
                }
            }
        };
        let name = function_name(function, e)?;
        let kind = match (name.as_str(), aggregate_function(&name)) {
            (_, Some(a)) => WindowFunction::Aggregate(a),
            ("ROW_NUMBER", None) => WindowFunction::RowNumber,
            ("RANK", None) => WindowFunction::Rank,
            ("DENSE_RANK", None) => WindowFunction::DenseRank,
            ("LAG", None) => WindowFunction::Shift { offset: 1 },
            ("LEAD", None) => WindowFunction::Shift { offset: -1 },
            _ => {
                return Err(unsupported(
                    &format!("the window function {name}"),
                    e.span(),
                ));
            }
        };
        let star = matches!(
            &function.args,
            FunctionArguments::List(list)
                if matches!(list.args.as_slice(), [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)])
        );
        let distinct = matches!(
            &function.args,
            FunctionArguments::List(list)
                if matches!(list.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct))
        );
        if distinct {
            return Err(unsupported("DISTINCT in a window function", e.span()));
        }
        let mut default = None;
        let (kind, argument) = match (kind, star) {
            (WindowFunction::Shift { offset: sign }, false) => {
                let args = plain_args(function, e)?;
                let (value, rest) = args
                    .split_first()
                    .ok_or_else(|| PlanError::user(format!("{name} takes a value"), e.span()))?;
                let value = self.expr(value, scope)?;
                let offset = match rest.first() {
                    None => 1,
                    Some(n) => match self.expr(n, scope)?.kind {
                        ExprKind::Literal(Literal::Integer(n)) if n >= 0 => n,
                        _ => {
                            return Err(PlanError::user(
                                format!("{name}'s offset must be an integer literal of 0 or more"),
                                e.span(),
                            ));
                        }
                    },
                };
                match rest.get(1) {
                    None => {}
                    Some(d) => {
                        let d = self.expr(d, scope)?;
                        if types::common_type(value.ty, d.ty) != Some(value.ty) {
                            return Err(PlanError::user(
                                format!(
                                    "{name}'s default must be of the value's type {}",
                                    value.ty
                                ),
                                e.span(),
                            ));
                        }
                        default = Some(cast(d, value.ty));
                    }
                }
                if rest.len() > 2 {
                    return Err(PlanError::user(
                        format!("{name} takes at most three arguments"),
                        e.span(),
                    ));
                }
                (
                    WindowFunction::Shift {
                        offset: sign * offset,
                    },
                    Some(value),
                )
            }
            (WindowFunction::Aggregate(AggregateFunction::Count), true) => (
                WindowFunction::Aggregate(AggregateFunction::CountRows),
                None,
            ),
            (WindowFunction::Aggregate(a), false) => {
                let args = plain_args(function, e)?;
                let [arg] = args.as_slice() else {
                    return Err(PlanError::user(
                        format!("{name} takes one argument"),
                        e.span(),
                    ));
                };
                (WindowFunction::Aggregate(a), Some(self.expr(arg, scope)?))
            }
            (_, true) => return Err(PlanError::user(format!("{name} takes no '*'"), e.span())),
            (ranking, false) => {
                if !plain_args(function, e)?.is_empty() {
                    return Err(PlanError::user(
                        format!("{name} takes no argument"),
                        e.span(),
                    ));
                }
                (ranking, None)
            }
        };
        let partition = spec
            .partition_by
            .iter()
            .map(|p| self.expr(p, scope))
            .collect::<Result<Vec<_>>>()?;
        let mut order = Vec::new();
        for item in &spec.order_by {
            let expr = self.expr(&item.expr, scope)?;
            let descending = item.options.asc == Some(false);
            order.push(SortKey {
                expr,
                descending,
                nulls_first: item.options.nulls_first.unwrap_or(!descending),
            });
        }
        let ty = match (kind, &argument) {
            (WindowFunction::Aggregate(AggregateFunction::Sum), Some(a)) => types::sum_type(a.ty),
            (WindowFunction::Aggregate(AggregateFunction::Avg), Some(a)) => types::avg_type(a.ty),
            (
                WindowFunction::Aggregate(AggregateFunction::Min | AggregateFunction::Max),
                Some(a),
            ) => Some(a.ty),
            (
                WindowFunction::Aggregate(
                    AggregateFunction::StddevSamp
                    | AggregateFunction::StddevPop
                    | AggregateFunction::VarSamp
                    | AggregateFunction::VarPop,
                ),
                Some(a),
            ) => {
                if !order.is_empty() && frame != Frame::Whole {
                    return Err(unsupported(
                        &format!("a running {name} (over an ORDER BY)"),
                        e.span(),
                    ));
                }
                a.ty.is_numeric().then_some(SqlType::Double)
            }
            (WindowFunction::Aggregate(_), _) => Some(SqlType::BigInt),
            (WindowFunction::Shift { .. }, Some(a)) => {
                if order.is_empty() {
                    return Err(PlanError::user(
                        format!("{name} needs an ORDER BY"),
                        e.span(),
                    ));
                }
                Some(a.ty)
            }
            (_, _) => {
                if order.is_empty() {
                    return Err(PlanError::user(
                        format!("{name} needs an ORDER BY"),
                        e.span(),
                    ));
                }
                Some(SqlType::BigInt)
            }
        }
        .ok_or_else(|| {
            PlanError::user(format!("{name} cannot take this argument's type"), e.span())
        })?;
        let windows = self.windows.get_or_insert_with(Vec::new);
        windows.push(Window {
            function: kind,
            argument,
            partition,
            order,
            default,
            frame,
            ty,
        });
        Ok(Expr {
            kind: ExprKind::Column(WINDOW_COLUMNS + windows.len() - 1),
            ty,
            nullable: true,
        })
    }
}

impl PlanError {
    fn internal_grouping() -> Self {
        Self::Internal {
            pass: "bind",
            message: "HAVING without grouping".to_owned(),
        }
    }
}

/// The groups and aggregates of a grouped SELECT, gathered while its expressions are bound.
struct Grouping {
    groups: Vec<Expr>,
    aggregates: Vec<Aggregate>,
    /// The fields of the rows being grouped.
    input: Vec<Field>,
    /// With ROLLUP, CUBE or GROUPING SETS: the grouping sets, each the positions of the
    /// groups it groups by (the others are NULL in its rows).
    sets: Option<Vec<Vec<usize>>>,
}

/// The SELECT list, the sort keys and the window functions with each column `i` they read
/// replaced by `map(i)`.
fn renumber_output(
    exprs: &mut Vec<Expr>,
    keys: &mut Vec<SortKey>,
    windows: &mut Vec<Window>,
    map: &dyn Fn(usize) -> usize,
) {
    *exprs = std::mem::take(exprs)
        .into_iter()
        .map(|e| e.remap(map))
        .collect();
    *keys = std::mem::take(keys)
        .into_iter()
        .map(|k| SortKey {
            expr: k.expr.remap(map),
            ..k
        })
        .collect();
    *windows = std::mem::take(windows)
        .into_iter()
        .map(|w| w.remap(map))
        .collect();
}

/// Grouping sets, each the positions of the expressions it groups by.
type Sets = Vec<Vec<usize>>;

/// Where `GROUPING(...)` reads the grouping set's bitmask while a SELECT is bound: renumbered
/// to the column after the aggregates once their number is known.
const GROUPING_COLUMN: usize = 1 << 43;

/// The expressions of a GROUP BY in order of appearance (repeats kept) and, when it has
/// ROLLUP, CUBE or GROUPING SETS, its grouping sets as positions in that list: the cross
/// product of each item's alternatives (a plain expression is always grouped by).
fn grouping_sets(group_by: &[Ast]) -> Result<(Vec<&Ast>, Option<Sets>)> {
    let mut expressions: Vec<&Ast> = Vec::new();
    let mut product: Vec<Vec<usize>> = vec![Vec::new()];
    let mut any = false;
    for item in group_by {
        let alternatives: Vec<Vec<usize>> = match item {
            Ast::Rollup(parts) => {
                any = true;
                let placed = place(&mut expressions, parts);
                (0..=placed.len())
                    .rev()
                    .map(|n| placed[..n].concat())
                    .collect()
            }
            Ast::Cube(parts) => {
                any = true;
                let placed = place(&mut expressions, parts);
                if placed.len() > 12 {
                    return Err(PlanError::user(
                        "CUBE of more than 12 expressions is not supported",
                        item.span(),
                    ));
                }
                let n = placed.len();
                (0..1usize << n)
                    .rev()
                    .map(|mask| {
                        (0..n)
                            .filter(|i| mask & (1 << (n - 1 - i)) != 0)
                            .flat_map(|i| placed[i].clone())
                            .collect()
                    })
                    .collect()
            }
            Ast::GroupingSets(sets) => {
                any = true;
                place(&mut expressions, sets)
            }
            plain => {
                expressions.push(plain);
                vec![vec![expressions.len() - 1]]
            }
        };
        product = product
            .iter()
            .flat_map(|done| {
                alternatives
                    .iter()
                    .map(move |alt| [done.clone(), alt.clone()].concat())
            })
            .collect();
        if product.len() > 4096 {
            return Err(PlanError::user(
                "more than 4096 grouping sets are not supported",
                item.span(),
            ));
        }
    }
    Ok((expressions, any.then_some(product)))
}

/// Each part of a ROLLUP, CUBE or GROUPING SETS (a parenthesized list) as the positions its
/// expressions take in `expressions`.
fn place<'a>(expressions: &mut Vec<&'a Ast>, parts: &'a [Vec<Ast>]) -> Vec<Vec<usize>> {
    parts
        .iter()
        .map(|part| {
            part.iter()
                .map(|e| {
                    expressions.push(e);
                    expressions.len() - 1
                })
                .collect()
        })
        .collect()
}

/// The rows of `input` grouped by each of `sets` in turn (a UNION ALL of one aggregation per
/// set): every group key, NULL where the set does not group by it, the aggregates, and the
/// set's bitmask (bit `n - 1 - i` set where group `i` is not grouped by, as `GROUPING_ID`).
fn grouped_by_sets(
    input: Plan,
    groups: &[Expr],
    aggregates: &[Aggregate],
    fields: &[Field],
    sets: &[Vec<usize>],
) -> Plan {
    let n = groups.len();
    let mut out: Vec<Field> = fields.to_vec();
    for f in &mut out[..n] {
        f.nullable = true;
    }
    out.push(Field {
        name: "$GROUPING".into(),
        qualifier: None,
        ty: SqlType::BigInt,
        nullable: false,
    });
    let branches = sets
        .iter()
        .map(|set| {
            let mut set_fields: Vec<Field> = set.iter().map(|&i| fields[i].clone()).collect();
            set_fields.extend(fields[n..].iter().cloned());
            let grouped = Plan::Aggregate {
                input: Box::new(input.clone()),
                groups: set.iter().map(|&i| groups[i].clone()).collect(),
                aggregates: aggregates.to_vec(),
                fields: set_fields.clone(),
            };
            let mut mask = 0i64;
            let mut exprs: Vec<Expr> = (0..n)
                .map(|i| match set.iter().position(|&j| j == i) {
                    Some(at) => Expr::column(at, &set_fields[at]),
                    None => {
                        mask |= 1 << (n - 1 - i);
                        Expr {
                            kind: ExprKind::Literal(Literal::Null),
                            ty: groups[i].ty,
                            nullable: true,
                        }
                    }
                })
                .collect();
            exprs.extend(
                (0..aggregates.len())
                    .map(|j| Expr::column(set.len() + j, &set_fields[set.len() + j])),
            );
            exprs.push(Expr {
                kind: ExprKind::Literal(Literal::Integer(mask)),
                ty: SqlType::BigInt,
                nullable: false,
            });
            Plan::Project {
                input: Box::new(grouped),
                exprs,
                fields: out.clone(),
            }
        })
        .collect();
    Plan::Union {
        inputs: branches,
        fields: out,
    }
}

/// Binds `e` over the groups: an aggregate call becomes the aggregate's output column, an
/// expression equal to a group key that key's column; a column neither grouped nor inside an
/// aggregate is refused, as Calcite refuses it.
fn bind_over_groups(binder: &mut Binder<'_>, e: &Ast, g: &mut Grouping) -> Result<Expr> {
    let input = g.input.clone();
    let groups = g.groups.clone();
    let group_count = groups.len();
    let by_sets = g.sets.is_some();
    // Output columns of the aggregation, as they are known so far.
    let mut out_fields: Vec<Field> = groups
        .iter()
        .map(|e| Field {
            name: String::new(),
            qualifier: None,
            ty: e.ty,
            nullable: e.nullable,
        })
        .collect();
    out_fields.extend(g.aggregates.iter().map(|a| Field {
        name: String::new(),
        qualifier: None,
        ty: a.ty,
        nullable: true,
    }));
    let aggregates = std::cell::RefCell::new(std::mem::take(&mut g.aggregates));
    let result = {
        let mut hook = |node: &Ast| -> Result<Option<Expr>> {
            // An aggregate call: its arguments bind over the input rows.
            if let Ast::Function(function) = node
                && function.over.is_none()
            {
                let name = function_name(function, node)?;
                if name == "GROUPING" || name == "GROUPING_ID" {
                    return grouping_call(&name, function, node, &input, &groups, by_sets)
                        .map(Some);
                }
                if let Some(kind) = aggregate_function(&name) {
                    let aggregate = bind_aggregate(&input, kind, function, node)?;
                    // `SUM(n)` of an integer literal: Kylin counts rows (Tableau's "number
                    // of records" is `SUM(1)`), n times; 0 over no rows, never NULL.
                    let times = match (&aggregate.function, &aggregate.argument) {
                        (
                            AggregateFunction::Sum,
                            Some(Expr {
                                kind: ExprKind::Literal(Literal::Integer(n)),
                                ..
                            }),
                        ) if !aggregate.distinct => Some(*n),
                        _ => None,
                    };
                    let aggregate = match times {
                        Some(_) => Aggregate {
                            function: AggregateFunction::CountRows,
                            argument: None,
                            distinct: false,
                            ty: SqlType::BigInt,
                        },
                        None => aggregate,
                    };
                    let mut list = aggregates.borrow_mut();
                    let at = match list.iter().position(|a| *a == aggregate) {
                        Some(at) => at,
                        None => {
                            list.push(aggregate);
                            list.len() - 1
                        }
                    };
                    let column = aggregate_column(&list[at], group_count + at);
                    return Ok(Some(match times {
                        None | Some(1) => column,
                        Some(n) => Expr {
                            ty: SqlType::BigInt,
                            nullable: false,
                            kind: ExprKind::Binary(
                                Binary::Arithmetic(Arithmetic::Multiply),
                                Box::new(Expr {
                                    kind: ExprKind::Literal(Literal::Integer(n)),
                                    ty: SqlType::BigInt,
                                    nullable: false,
                                }),
                                Box::new(column),
                            ),
                        },
                    }));
                }
            }
            // An expression equal to a group key.
            let mut plain = Scope::new(&input);
            if let Ok(bound) = Binder::new(&Catalog::default()).expr(node, &mut plain)
                && let Some(at) = groups.iter().position(|k| *k == bound)
            {
                return Ok(Some(Expr {
                    kind: ExprKind::Column(at),
                    ty: bound.ty,
                    // A key a grouping set does not group by is NULL in its rows.
                    nullable: bound.nullable || by_sets,
                }));
            }
            // A bare column that is not grouped.
            if matches!(node, Ast::Identifier(_) | Ast::CompoundIdentifier(_)) {
                return Err(PlanError::user(
                    format!("expression '{node}' is not being grouped"),
                    node.span(),
                ));
            }
            Ok(None)
        };
        let mut scope = Scope {
            fields: &out_fields,
            hook: Some(&mut hook),
        };
        binder.expr(e, &mut scope)
    };
    g.aggregates = aggregates.into_inner();
    result
}

/// `GROUPING(x)` (1 where the row's grouping set does not group by `x`, else 0) or
/// `GROUPING_ID(x, y, ...)` (those bits, the first argument's the most significant), read
/// from the grouping sets' mask ([`GROUPING_COLUMN`]).
fn grouping_call(
    name: &str,
    function: &ast::Function,
    node: &Ast,
    input: &[Field],
    groups: &[Expr],
    by_sets: bool,
) -> Result<Expr> {
    if !by_sets {
        return Err(PlanError::user(
            format!("{name}(...) needs GROUP BY ROLLUP, CUBE or GROUPING SETS"),
            node.span(),
        ));
    }
    let FunctionArguments::List(list) = &function.args else {
        return Err(PlanError::user(
            format!("{name} takes the grouped expressions"),
            node.span(),
        ));
    };
    let int = |n: i64| Expr {
        kind: ExprKind::Literal(Literal::Integer(n)),
        ty: SqlType::BigInt,
        nullable: false,
    };
    let arith = |op: Arithmetic, l: Expr, r: Expr| Expr {
        kind: ExprKind::Binary(Binary::Arithmetic(op), Box::new(l), Box::new(r)),
        ty: SqlType::BigInt,
        nullable: false,
    };
    let n = groups.len();
    let m = list.args.len();
    let mut value: Option<Expr> = None;
    for (k, arg) in list.args.iter().enumerate() {
        let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg else {
            return Err(PlanError::user(
                format!("{name} takes the grouped expressions"),
                node.span(),
            ));
        };
        let bound = Binder::new(&Catalog::default()).expr(e, &mut Scope::new(input))?;
        let Some(i) = groups.iter().position(|g| *g == bound) else {
            return Err(PlanError::user(
                format!("{name}: '{e}' is not grouped by"),
                e.span(),
            ));
        };
        let mask = Expr {
            kind: ExprKind::Column(GROUPING_COLUMN),
            ty: SqlType::BigInt,
            nullable: false,
        };
        let bit = arith(
            Arithmetic::Modulo,
            arith(Arithmetic::Divide, mask, int(1 << (n - 1 - i))),
            int(2),
        );
        let placed = arith(Arithmetic::Multiply, bit, int(1 << (m - 1 - k)));
        value = Some(match value {
            None => placed,
            Some(v) => arith(Arithmetic::Add, v, placed),
        });
    }
    let value = value.ok_or_else(|| {
        PlanError::user(format!("{name} takes at least one expression"), node.span())
    })?;
    Ok(if name == "GROUPING" {
        Expr {
            kind: ExprKind::Cast(Box::new(value)),
            ty: SqlType::Integer,
            nullable: false,
        }
    } else {
        value
    })
}

/// The aggregation's output column holding `a`.
fn aggregate_column(a: &Aggregate, column: usize) -> Expr {
    Expr {
        kind: ExprKind::Column(column),
        ty: a.ty,
        nullable: !matches!(
            a.function,
            AggregateFunction::Count | AggregateFunction::CountRows
        ),
    }
}

fn bind_aggregate(
    input: &[Field],
    function: AggregateFunction,
    call: &ast::Function,
    node: &Ast,
) -> Result<Aggregate> {
    let FunctionArguments::List(list) = &call.args else {
        return Err(PlanError::user(
            "an aggregate needs an argument list",
            node.span(),
        ));
    };
    if call.filter.is_some() || !call.within_group.is_empty() || !list.clauses.is_empty() {
        return Err(unsupported("this form of aggregate call", node.span()));
    }
    let distinct = matches!(
        list.duplicate_treatment,
        Some(ast::DuplicateTreatment::Distinct)
    );
    let star = matches!(
        list.args.as_slice(),
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
    );
    if star {
        if function != AggregateFunction::Count {
            return Err(PlanError::user("only COUNT takes '*'", node.span()));
        }
        return Ok(Aggregate {
            function: AggregateFunction::CountRows,
            argument: None,
            distinct: false,
            ty: SqlType::BigInt,
        });
    }
    let args: Vec<&Ast> = list
        .args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(unsupported("this kind of function argument", node.span())),
        })
        .collect::<Result<_>>()?;
    let [arg] = args.as_slice() else {
        return Err(PlanError::user(
            format!("{} takes one argument", call.name),
            node.span(),
        ));
    };
    if has_aggregate(arg) {
        return Err(PlanError::user("aggregates cannot be nested", node.span()));
    }
    // Arguments read the grouped rows' columns only (relations were bound already).
    let mut scope = Scope::new(input);
    let argument = Binder::new(&Catalog::default()).expr(arg, &mut scope)?;
    let ty = match function {
        AggregateFunction::Count | AggregateFunction::CountRows => Some(SqlType::BigInt),
        AggregateFunction::Sum => types::sum_type(argument.ty),
        AggregateFunction::Avg => types::avg_type(argument.ty),
        AggregateFunction::Min | AggregateFunction::Max | AggregateFunction::Single => {
            Some(argument.ty)
        }
        AggregateFunction::StddevSamp
        | AggregateFunction::StddevPop
        | AggregateFunction::VarSamp
        | AggregateFunction::VarPop => argument.ty.is_numeric().then_some(SqlType::Double),
    }
    .ok_or_else(|| {
        PlanError::user(
            format!("{} cannot take a value of type {}", call.name, argument.ty),
            node.span(),
        )
    })?;
    Ok(Aggregate {
        function,
        argument: Some(argument),
        distinct,
        ty,
    })
}

/// Binds some nodes itself (`Some`), before the binder looks at them.
type Hook<'s> = &'s mut dyn FnMut(&Ast) -> Result<Option<Expr>>;

/// Columns visible to an expression, and an optional hook that binds some nodes itself.
struct Scope<'s> {
    fields: &'s [Field],
    hook: Option<Hook<'s>>,
}

impl<'s> Scope<'s> {
    fn new(fields: &'s [Field]) -> Self {
        Self { fields, hook: None }
    }

    /// Resolves `[qualifier.]column` (or `schema.table.column`): names match ignoring case,
    /// and of several matches the one spelled as written wins.
    fn column(&self, parts: &[&Ident], at: &Ast) -> Result<Expr> {
        let (qualifier, name) = match parts {
            [name] => (None, *name),
            [.., qualifier, name] => (Some(*qualifier), *name),
            [] => return Err(PlanError::user("an empty name", at.span())),
        };
        let in_relation: Vec<(usize, &Field)> = match qualifier {
            None => self.fields.iter().enumerate().collect(),
            Some(q) => {
                let qualifiers = self.fields.iter().filter_map(|f| f.qualifier.as_deref());
                let mut distinct: Vec<&str> = Vec::new();
                for candidate in qualifiers {
                    if !distinct.contains(&candidate) {
                        distinct.push(candidate);
                    }
                }
                let chosen = resolve(&q.value, case_of(q), distinct.into_iter().map(|d| (d, d)))
                    .map_err(|found| {
                        let message = if found.is_empty() {
                            format!("table '{q}' not found in FROM for column '{at}'")
                        } else {
                            format!("table '{q}' is ambiguous in FROM")
                        };
                        PlanError::user(message, at.span())
                    })?;
                self.fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.qualifier.as_deref() == Some(chosen))
                    .collect()
            }
        };
        let candidates = in_relation.iter().map(|(i, f)| (f.name.as_str(), *i));
        match resolve(&name.value, case_of(name), candidates) {
            Ok(i) => Ok(Expr::column(i, &self.fields[i])),
            Err(found) if found.is_empty() => Err(PlanError::user(
                format!("column '{at}' not found"),
                at.span(),
            )),
            Err(_) => Err(PlanError::user(
                format!("column '{at}' is ambiguous; qualify it with its table"),
                at.span(),
            )),
        }
    }
}

/// `left UNION [ALL] right`: columns by position, each in the two sides' common type, named
/// as the left side names them.
fn union(left: Plan, right: Plan, all: bool, at: &SetExpr) -> Result<Plan> {
    let (left, right, fields) = set_sides(left, right, "UNION", at)?;
    let plan = Plan::Union {
        inputs: vec![left, right],
        fields,
    };
    Ok(if all {
        plan
    } else {
        Plan::Distinct {
            input: Box::new(plan),
        }
    })
}

/// The two sides of a set operation (`op`), each projected to the sides' common column types,
/// and the output's fields, named as the left side names them.
fn set_sides(left: Plan, right: Plan, op: &str, at: &SetExpr) -> Result<(Plan, Plan, Vec<Field>)> {
    let (l, r) = (left.fields().to_vec(), right.fields().to_vec());
    if l.len() != r.len() {
        return Err(PlanError::user(
            format!(
                "the two sides of {op} have {} and {} columns",
                l.len(),
                r.len()
            ),
            at.span(),
        ));
    }
    let mut fields = Vec::with_capacity(l.len());
    for (a, b) in l.iter().zip(&r) {
        let ty = types::common_type(a.ty, b.ty).ok_or_else(|| {
            PlanError::user(
                format!(
                    "{op} cannot put {} and {} in one column ({})",
                    a.ty, b.ty, a.name
                ),
                at.span(),
            )
        })?;
        fields.push(Field {
            name: a.name.clone(),
            qualifier: None,
            ty,
            nullable: a.nullable || b.nullable,
        });
    }
    let typed = |plan: Plan, from: &[Field]| Plan::Project {
        exprs: from
            .iter()
            .zip(&fields)
            .enumerate()
            .map(|(i, (f, to))| cast(Expr::column(i, f), to.ty))
            .collect(),
        fields: fields.clone(),
        input: Box::new(plan),
    };
    Ok((typed(left, &l), typed(right, &r), fields))
}

/// `left INTERSECT right` (`kind` Semi) or `left EXCEPT right` (Anti): the left side's
/// distinct rows that are (or are not) among the right side's, rows compared column by column
/// in the sides' common types with NULL equal to NULL, as set operations compare them.
fn set_match(left: Plan, right: Plan, kind: JoinKind, at: &SetExpr) -> Result<Plan> {
    let op = if kind == JoinKind::Semi {
        "INTERSECT"
    } else {
        "EXCEPT"
    };
    let (left, right, fields) = set_sides(left, right, op, at)?;
    let width = fields.len();
    let on = fields
        .iter()
        .enumerate()
        .map(|(i, f)| Expr {
            ty: SqlType::Boolean,
            nullable: false,
            kind: ExprKind::Binary(
                Binary::NotDistinct,
                Box::new(Expr::column(i, f)),
                Box::new(Expr::column(width + i, f)),
            ),
        })
        .reduce(|a, b| Expr {
            ty: SqlType::Boolean,
            nullable: false,
            kind: ExprKind::Binary(Binary::And, Box::new(a), Box::new(b)),
        });
    Ok(Plan::Distinct {
        input: Box::new(Plan::Join {
            left: Box::new(left),
            right: Box::new(right),
            kind,
            on,
            strategy: JoinStrategy::Hash,
            fields,
        }),
    })
}

/// ORDER BY over a set operation's output: by position or by an output column's name.
fn sort_outputs(plan: Plan, order_by: &[ast::OrderByExpr]) -> Result<Plan> {
    if order_by.is_empty() {
        return Ok(plan);
    }
    let fields = plan.fields().to_vec();
    let mut keys = Vec::new();
    for item in order_by {
        let expr = &item.expr;
        let at = match ordinal(expr) {
            Some(n) if n >= 1 && n <= fields.len() => n - 1,
            Some(n) => {
                return Err(PlanError::user(
                    format!("ORDER BY position {n} is not in the select list"),
                    expr.span(),
                ));
            }
            None => output_named(expr, &fields).ok_or_else(|| {
                PlanError::user(
                    "ORDER BY of a UNION names an output column or its position",
                    expr.span(),
                )
            })?,
        };
        let descending = item.options.asc == Some(false);
        keys.push(SortKey {
            expr: Expr::column(at, &fields[at]),
            descending,
            nulls_first: item.options.nulls_first.unwrap_or(!descending),
        });
    }
    Ok(Plan::Sort {
        input: Box::new(plan),
        keys,
    })
}

/// The output column `expr` names by its label (`ORDER BY revenue` for `... AS revenue`).
fn output_named(expr: &Ast, fields: &[Field]) -> Option<usize> {
    let Ast::Identifier(ident) = expr else {
        return None;
    };
    let wanted = label(ident);
    let found: Vec<usize> = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            if ident.quote_style.is_some() {
                f.name == wanted
            } else {
                f.name.eq_ignore_ascii_case(&wanted)
            }
        })
        .map(|(i, _)| i)
        .collect();
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The name a bound column reference reports: the field it reads (through the group key,
/// in a grouped query).
fn column_name(e: &Expr, input: &[Field], grouping: Option<&Grouping>) -> Option<String> {
    let ExprKind::Column(i) = e.kind else {
        return None;
    };
    match grouping {
        Some(g) => column_name(g.groups.get(i)?, &g.input, None),
        None => input
            .get(i)
            .map(|f| f.name.clone())
            .filter(|n| !n.is_empty()),
    }
}

/// A positive integer literal (`ORDER BY 2`, `GROUP BY 1`).
fn ordinal(e: &Ast) -> Option<usize> {
    match e {
        Ast::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `e` calls an aggregate function outside a window.
fn has_aggregate(e: &Ast) -> bool {
    use std::ops::ControlFlow;
    /// Found, and how deep in subqueries the visit is (a subquery's aggregates are its own).
    struct Finder(bool, usize);
    impl ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.1 += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.1 -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Ast) -> ControlFlow<()> {
            if self.1 == 0
                && let Ast::Function(f) = e
                && f.over.is_none()
                && let [ObjectNamePart::Identifier(name)] = f.name.0.as_slice()
                && aggregate_function(&name.value.to_uppercase()).is_some()
            {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut finder = Finder(false, 0);
    let _ = ast::Visit::visit(e, &mut finder);
    finder.0
}

fn aggregate_function(name: &str) -> Option<AggregateFunction> {
    Some(match name {
        "COUNT" => AggregateFunction::Count,
        "SUM" => AggregateFunction::Sum,
        "AVG" => AggregateFunction::Avg,
        "MIN" => AggregateFunction::Min,
        "MAX" => AggregateFunction::Max,
        "STDDEV_SAMP" | "STDDEV" => AggregateFunction::StddevSamp,
        "STDDEV_POP" => AggregateFunction::StddevPop,
        "VAR_SAMP" | "VARIANCE" => AggregateFunction::VarSamp,
        "VAR_POP" => AggregateFunction::VarPop,
        _ => return None,
    })
}

/// A function's one-part name, upper-cased.
fn function_name(function: &ast::Function, at: &Ast) -> Result<String> {
    match function.name.0.as_slice() {
        [ObjectNamePart::Identifier(name)] => Ok(name.value.to_uppercase()),
        _ => Err(PlanError::user(
            format!("function {} not found", function.name),
            at.span(),
        )),
    }
}

/// A call's arguments, when they are plain expressions.
fn plain_args<'f>(function: &'f ast::Function, at: &Ast) -> Result<Vec<&'f Ast>> {
    match &function.args {
        FunctionArguments::None => Ok(Vec::new()),
        FunctionArguments::List(list) => {
            if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                return Err(unsupported("this form of function call", at.span()));
            }
            list.args
                .iter()
                .map(|arg| match arg {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                    _ => Err(unsupported("this kind of function argument", at.span())),
                })
                .collect()
        }
        FunctionArguments::Subquery(_) => Err(unsupported("a subquery argument", at.span())),
    }
}

/// A scalar function of the registry by name.
fn call(name: &str, args: Vec<Expr>, at: &Ast) -> Result<Expr> {
    let f = match name {
        "UPPER" | "UCASE" => Scalar::Upper,
        "LOWER" | "LCASE" => Scalar::Lower,
        "SUBSTRING" | "SUBSTR" => Scalar::Substring,
        "CHAR_LENGTH" | "CHARACTER_LENGTH" | "LENGTH" => Scalar::CharLength,
        "TRIM" => Scalar::Trim,
        "COALESCE" | "IFNULL" | "NVL" => Scalar::Coalesce,
        "ABS" => Scalar::Abs,
        "ROUND" => Scalar::Round,
        "FLOOR" => Scalar::Floor,
        "CEIL" | "CEILING" => Scalar::Ceil,
        "YEAR" => Scalar::Year,
        "QUARTER" => Scalar::Quarter,
        "MONTH" => Scalar::Month,
        "DAYOFMONTH" | "DAY" => Scalar::DayOfMonth,
        "DAYOFWEEK" => Scalar::DayOfWeek,
        "DAYOFYEAR" => Scalar::DayOfYear,
        "WEEK" | "WEEKOFYEAR" => Scalar::Week,
        "HOUR" => Scalar::Hour,
        "MINUTE" => Scalar::Minute,
        "SECOND" => Scalar::Second,
        "DATEDIFF" => Scalar::DateDiff,
        "DATE_ADD" | "DATE_SUB" => {
            let [d, n]: [Expr; 2] = args.try_into().map_err(|_| {
                PlanError::user(
                    format!("{name} takes a date and a number of days"),
                    at.span(),
                )
            })?;
            if !n.ty.is_integer() && n.ty != SqlType::Null {
                return Err(PlanError::user(
                    format!("{name} takes a date and a number of days"),
                    at.span(),
                ));
            }
            let d = match d.ty {
                SqlType::Date => d,
                SqlType::Timestamp | SqlType::Varchar | SqlType::Null => cast(d, SqlType::Date),
                _ => {
                    return Err(PlanError::user(
                        format!("{name} takes a date and a number of days"),
                        at.span(),
                    ));
                }
            };
            let op = if name == "DATE_ADD" {
                BinaryOperator::Plus
            } else {
                BinaryOperator::Minus
            };
            return binary(&op, d, cast(n, SqlType::Integer), at);
        }
        "REPLACE" => Scalar::Replace,
        "LEFT" => Scalar::Left,
        "RIGHT" => Scalar::Right,
        "LTRIM" => Scalar::LTrim,
        "RTRIM" => Scalar::RTrim,
        "POWER" | "POW" => Scalar::Power,
        "SQRT" => Scalar::Sqrt,
        "MOD" => {
            let [a, b]: [Expr; 2] = args
                .try_into()
                .map_err(|_| PlanError::user("MOD takes two numbers", at.span()))?;
            return binary(&BinaryOperator::Modulo, a, b, at);
        }
        "NULLIF" => {
            // NULL where the two are equal, else the first (in their common type).
            let [a, b]: [Expr; 2] = args
                .try_into()
                .map_err(|_| PlanError::user("NULLIF takes two values", at.span()))?;
            let ty = types::common_type(a.ty, b.ty).ok_or_else(|| {
                PlanError::user(
                    format!("NULLIF cannot compare {} with {}", a.ty, b.ty),
                    at.span(),
                )
            })?;
            let equal = binary(&BinaryOperator::Eq, a.clone(), b, at)?;
            return Ok(Expr {
                ty,
                nullable: true,
                kind: ExprKind::Case {
                    branches: vec![(equal, cast(null_literal(), ty))],
                    otherwise: Box::new(cast(a, ty)),
                },
            });
        }
        "DATE_TRUNC" => {
            // Spark's `date_trunc(unit, t)`, which Kylin passes through: a TIMESTAMP always.
            let mut args = args.into_iter();
            let (Some(unit), Some(value), None) = (args.next(), args.next(), args.next()) else {
                return Err(PlanError::user(
                    "DATE_TRUNC takes a unit and a date or timestamp",
                    at.span(),
                ));
            };
            let ExprKind::Literal(Literal::String(unit)) = &unit.kind else {
                return Err(PlanError::user(
                    "DATE_TRUNC's unit must be a string literal such as 'MONTH'",
                    at.span(),
                ));
            };
            let unit = match unit.to_ascii_uppercase().as_str() {
                "YEAR" | "YYYY" | "YY" => TimeUnit::Year,
                "QUARTER" => TimeUnit::Quarter,
                "MONTH" | "MON" | "MM" => TimeUnit::Month,
                "WEEK" => TimeUnit::Week,
                "DAY" | "DD" => TimeUnit::Day,
                "HOUR" => TimeUnit::Hour,
                "MINUTE" => TimeUnit::Minute,
                "SECOND" => TimeUnit::Second,
                other => {
                    return Err(PlanError::user(
                        format!(
                            "DATE_TRUNC does not know the unit '{other}'; use YEAR, QUARTER, \
                             MONTH, WEEK, DAY, HOUR, MINUTE or SECOND"
                        ),
                        at.span(),
                    ));
                }
            };
            let value = match value.ty {
                SqlType::Date | SqlType::Varchar => cast(value, SqlType::Timestamp),
                _ => value,
            };
            return scalar(Scalar::FloorTo(unit), vec![value], at);
        }
        "CONCAT" => {
            // Kylin's CONCAT: NULL if any argument is NULL, as `||`.
            let mut iter = args.into_iter();
            let first = iter
                .next()
                .ok_or_else(|| PlanError::user("CONCAT needs arguments", at.span()))?;
            return iter.try_fold(first, |acc, next| {
                binary(&BinaryOperator::StringConcat, acc, next, at)
            });
        }
        _ => {
            return Err(PlanError::user(
                format!("function {name} not found"),
                at.span(),
            ));
        }
    };
    scalar(f, args, at)
}

/// Types a scalar function call.
fn scalar(f: Scalar, args: Vec<Expr>, at: &Ast) -> Result<Expr> {
    let wrong = |expected: &str| {
        let name = format!("{f:?}").to_uppercase();
        PlanError::user(format!("{name} takes {expected}"), at.span())
    };
    let nullable = args.iter().any(|a| a.nullable);
    let ty = match f {
        Scalar::DateAdd => match args.as_slice() {
            [d, n] if d.ty == SqlType::Date && n.ty.is_integer() => SqlType::Date,
            _ => return Err(wrong("a date and a number of days")),
        },
        Scalar::Upper | Scalar::Lower | Scalar::Trim => match args.as_slice() {
            [a] if matches!(a.ty, SqlType::Varchar | SqlType::Null) => SqlType::Varchar,
            _ => return Err(wrong("one string")),
        },
        Scalar::Substring => match args.as_slice() {
            [s, rest @ ..]
                if matches!(s.ty, SqlType::Varchar | SqlType::Null)
                    && (1..=2).contains(&rest.len())
                    && rest
                        .iter()
                        .all(|r| r.ty.is_integer() || r.ty == SqlType::Null) =>
            {
                SqlType::Varchar
            }
            _ => return Err(wrong("a string and one or two integers")),
        },
        Scalar::CharLength => match args.as_slice() {
            [a] if matches!(a.ty, SqlType::Varchar | SqlType::Null) => SqlType::Integer,
            _ => return Err(wrong("one string")),
        },
        Scalar::Coalesce => {
            let mut ty = SqlType::Null;
            for a in &args {
                ty = types::common_type(ty, a.ty).ok_or_else(|| wrong("values of one type"))?;
            }
            let nullable = args.iter().all(|a| a.nullable);
            let args = args.into_iter().map(|a| cast(a, ty)).collect();
            return Ok(Expr {
                ty,
                nullable,
                kind: ExprKind::Function(f, args),
            });
        }
        Scalar::Abs => match args.as_slice() {
            [a] if a.ty.is_numeric() => a.ty,
            _ => return Err(wrong("one number")),
        },
        Scalar::Round => {
            let digits = match args.get(1).map(|d| &d.kind) {
                None => 0,
                Some(ExprKind::Literal(Literal::Integer(n))) => *n,
                Some(_) => return Err(wrong("a number and a literal scale")),
            };
            match args.first().map(|a| a.ty) {
                // Spark: rounding a decimal to fewer places narrows its scale to them.
                Some(SqlType::Decimal { precision, scale })
                    if args.len() <= 2 && digits >= 0 && digits < i64::from(scale) =>
                {
                    let digits = u8::try_from(digits).unwrap_or(0);
                    SqlType::decimal((precision - scale + digits + 1).min(38), digits)
                        .ok_or_else(|| wrong("a number and a literal scale"))?
                }
                Some(t) if t.is_numeric() && args.len() <= 2 => t,
                _ => return Err(wrong("a number and an optional scale")),
            }
        }
        Scalar::Floor | Scalar::Ceil => match args.as_slice() {
            [a] if a.ty.is_integer() => a.ty,
            [a] if matches!(a.ty, SqlType::Decimal { .. }) => {
                let (p, s) = a.ty.as_decimal().unwrap_or((38, 0));
                SqlType::decimal((p - s + 1).min(38), 0).unwrap_or(SqlType::BigInt)
            }
            [a] if a.ty.is_numeric() => SqlType::BigInt,
            _ => return Err(wrong("one number")),
        },
        Scalar::FloorTo(unit) => match args.as_slice() {
            [a] if a.ty == SqlType::Timestamp => SqlType::Timestamp,
            // A date floors to a date; below a day it is its own floor.
            [a] if a.ty == SqlType::Date && unit >= TimeUnit::Day => SqlType::Date,
            [date] if date.ty == SqlType::Date => {
                let arg = cast(date.clone(), SqlType::Timestamp);
                return Ok(Expr {
                    ty: SqlType::Timestamp,
                    nullable,
                    kind: ExprKind::Function(f, vec![arg]),
                });
            }
            _ => return Err(wrong("a date or timestamp")),
        },
        Scalar::Hour | Scalar::Minute | Scalar::Second => match args.as_slice() {
            [a] if a.ty == SqlType::Timestamp || a.ty == SqlType::Null => SqlType::Integer,
            // A date is midnight; a string is read as a timestamp (NULL when it is not one).
            [a] if matches!(a.ty, SqlType::Date | SqlType::Varchar) => {
                return Ok(Expr {
                    ty: SqlType::Integer,
                    nullable: true,
                    kind: ExprKind::Function(f, vec![cast(a.clone(), SqlType::Timestamp)]),
                });
            }
            _ => return Err(wrong("one timestamp")),
        },
        Scalar::DateDiff => match args.as_slice() {
            [end, start]
                if [end, start].iter().all(|a| {
                    a.ty.is_temporal() || matches!(a.ty, SqlType::Varchar | SqlType::Null)
                }) =>
            {
                return Ok(Expr {
                    ty: SqlType::Integer,
                    nullable: true,
                    kind: ExprKind::Function(
                        f,
                        vec![
                            cast(end.clone(), SqlType::Date),
                            cast(start.clone(), SqlType::Date),
                        ],
                    ),
                });
            }
            _ => return Err(wrong("two dates")),
        },
        Scalar::Replace => match args.as_slice() {
            [_, _, _]
                if args
                    .iter()
                    .all(|a| matches!(a.ty, SqlType::Varchar | SqlType::Null)) =>
            {
                SqlType::Varchar
            }
            _ => return Err(wrong("three strings")),
        },
        Scalar::Left | Scalar::Right => match args.as_slice() {
            [s, n]
                if matches!(s.ty, SqlType::Varchar | SqlType::Null)
                    && (n.ty.is_integer() || n.ty == SqlType::Null) =>
            {
                SqlType::Varchar
            }
            _ => return Err(wrong("a string and an integer")),
        },
        Scalar::LTrim | Scalar::RTrim => match args.as_slice() {
            [a] if matches!(a.ty, SqlType::Varchar | SqlType::Null) => SqlType::Varchar,
            _ => return Err(wrong("one string")),
        },
        Scalar::Power | Scalar::Sqrt => {
            let arity = if f == Scalar::Power { 2 } else { 1 };
            if args.len() != arity
                || !args
                    .iter()
                    .all(|a| a.ty.is_numeric() || a.ty == SqlType::Null)
            {
                return Err(wrong(if arity == 2 {
                    "two numbers"
                } else {
                    "one number"
                }));
            }
            let args = args.into_iter().map(|a| cast(a, SqlType::Double)).collect();
            return Ok(Expr {
                ty: SqlType::Double,
                nullable,
                kind: ExprKind::Function(f, args),
            });
        }
        Scalar::Year
        | Scalar::Quarter
        | Scalar::Month
        | Scalar::DayOfMonth
        | Scalar::DayOfWeek
        | Scalar::DayOfYear
        | Scalar::Week => match args.as_slice() {
            [a] if a.ty.is_temporal() || a.ty == SqlType::Null => SqlType::Integer,
            [text] if text.ty == SqlType::Varchar => {
                let args = vec![cast(text.clone(), SqlType::Date)];
                return Ok(Expr {
                    ty: SqlType::Integer,
                    nullable: true,
                    kind: ExprKind::Function(f, args),
                });
            }
            _ => return Err(wrong("one date or timestamp")),
        },
    };
    Ok(Expr {
        ty,
        nullable,
        kind: ExprKind::Function(f, args),
    })
}

/// `expr` converted to `ty` (unchanged if it has that type already).
fn cast(expr: Expr, ty: SqlType) -> Expr {
    if expr.ty == ty {
        return expr;
    }
    Expr {
        ty,
        nullable: expr.nullable,
        kind: ExprKind::Cast(Box::new(expr)),
    }
}

fn not(e: Expr) -> Expr {
    Expr {
        ty: SqlType::Boolean,
        nullable: e.nullable,
        kind: ExprKind::Unary(Unary::Not, Box::new(e)),
    }
}

fn expect_boolean(e: Expr, at: &Ast) -> Result<Expr> {
    match e.ty {
        SqlType::Boolean => Ok(e),
        SqlType::Null => Ok(cast(e, SqlType::Boolean)),
        other => Err(PlanError::user(
            format!("a condition must be BOOLEAN, not {other}"),
            at.span(),
        )),
    }
}

/// Types a binary operation: arithmetic by [`types::arithmetic`], comparisons in the sides'
/// common type, AND/OR over booleans, `||` over strings.
fn binary(op: &BinaryOperator, l: Expr, r: Expr, at: &Ast) -> Result<Expr> {
    let nullable = l.nullable || r.nullable;
    let arithmetic = match op {
        BinaryOperator::Plus => Some(Arithmetic::Add),
        BinaryOperator::Minus => Some(Arithmetic::Subtract),
        BinaryOperator::Multiply => Some(Arithmetic::Multiply),
        BinaryOperator::Divide => Some(Arithmetic::Divide),
        BinaryOperator::Modulo => Some(Arithmetic::Modulo),
        _ => None,
    };
    // A date plus or minus whole days, as Spark (and so Kylin) reads `d + 5`.
    if let Some(a @ (Arithmetic::Add | Arithmetic::Subtract)) = arithmetic {
        let days = |e: &Expr| e.ty.is_integer();
        let (date, n) = match (l.ty, r.ty) {
            (SqlType::Date, _) if days(&r) => (Some(l.clone()), Some(r.clone())),
            (_, SqlType::Date) if days(&l) && a == Arithmetic::Add => {
                (Some(r.clone()), Some(l.clone()))
            }
            _ => (None, None),
        };
        if let (Some(date), Some(n)) = (date, n) {
            let n = cast(n, SqlType::Integer);
            let n = if a == Arithmetic::Subtract {
                Expr {
                    ty: SqlType::Integer,
                    nullable: n.nullable,
                    kind: ExprKind::Unary(Unary::Negate, Box::new(n)),
                }
            } else {
                n
            };
            return Ok(Expr {
                ty: SqlType::Date,
                nullable,
                kind: ExprKind::Function(Scalar::DateAdd, vec![date, n]),
            });
        }
    }
    if let Some(a) = arithmetic {
        let ty = types::arithmetic(a, l.ty, r.ty).ok_or_else(|| {
            PlanError::user(
                format!("cannot apply '{op}' to {} and {}", l.ty, r.ty),
                at.span(),
            )
        })?;
        return Ok(Expr {
            ty,
            // Division by zero is NULL (Spark, as Kylin answers).
            nullable: nullable || matches!(a, Arithmetic::Divide | Arithmetic::Modulo),
            kind: ExprKind::Binary(Binary::Arithmetic(a), Box::new(l), Box::new(r)),
        });
    }
    let comparison = match op {
        BinaryOperator::Eq => Some(Binary::Eq),
        BinaryOperator::NotEq => Some(Binary::NotEq),
        BinaryOperator::Lt => Some(Binary::Lt),
        BinaryOperator::LtEq => Some(Binary::LtEq),
        BinaryOperator::Gt => Some(Binary::Gt),
        BinaryOperator::GtEq => Some(Binary::GtEq),
        _ => None,
    };
    if let Some(c) = comparison {
        let ty = types::common_type(l.ty, r.ty).ok_or_else(|| {
            PlanError::user(format!("cannot compare {} with {}", l.ty, r.ty), at.span())
        })?;
        return Ok(Expr {
            ty: SqlType::Boolean,
            nullable,
            kind: ExprKind::Binary(c, Box::new(cast(l, ty)), Box::new(cast(r, ty))),
        });
    }
    match op {
        BinaryOperator::And | BinaryOperator::Or => {
            let l = expect_boolean(l, at)?;
            let r = expect_boolean(r, at)?;
            let b = if matches!(op, BinaryOperator::And) {
                Binary::And
            } else {
                Binary::Or
            };
            Ok(Expr {
                ty: SqlType::Boolean,
                nullable,
                kind: ExprKind::Binary(b, Box::new(l), Box::new(r)),
            })
        }
        BinaryOperator::StringConcat => Ok(Expr {
            ty: SqlType::Varchar,
            nullable,
            kind: ExprKind::Binary(
                Binary::Concat,
                Box::new(cast(l, SqlType::Varchar)),
                Box::new(cast(r, SqlType::Varchar)),
            ),
        }),
        other => Err(unsupported(&format!("the operator {other}"), at.span())),
    }
}

/// `l` and `r` as `=` compares them: each in the two sides' common type (a string literal
/// converted to the other side's type).
fn compared(l: Expr, r: Expr, at: &Ast) -> Result<(Expr, Expr)> {
    match binary(&BinaryOperator::Eq, l, r, at)?.kind {
        ExprKind::Binary(_, l, r) => Ok((*l, *r)),
        _ => Err(PlanError::Internal {
            pass: "bind",
            message: "an equality bound as something else".to_owned(),
        }),
    }
}

fn null_literal() -> Expr {
    Expr {
        kind: ExprKind::Literal(Literal::Null),
        ty: SqlType::Null,
        nullable: true,
    }
}

fn int_literal(n: i64) -> Expr {
    Expr {
        kind: ExprKind::Literal(Literal::Integer(n)),
        ty: SqlType::Integer,
        nullable: false,
    }
}

/// Types a literal as Calcite does: integers INTEGER (BIGINT past 32 bits, DECIMAL past 64),
/// numbers with a point DECIMAL with the digits written, exponents DOUBLE.
fn literal(v: &Value, at: &Ast) -> Result<Expr> {
    let (kind, ty) = match v {
        Value::Null => return Ok(null_literal()),
        Value::Boolean(b) => (Literal::Boolean(*b), SqlType::Boolean),
        Value::SingleQuotedString(s) | Value::NationalStringLiteral(s) => {
            (Literal::String(s.clone()), SqlType::Varchar)
        }
        Value::Number(n, _) => number(n).ok_or_else(|| {
            PlanError::user(format!("'{n}' is not a number Spool can hold"), at.span())
        })?,
        other => return Err(unsupported(&format!("the literal {other}"), at.span())),
    };
    Ok(Expr {
        kind: ExprKind::Literal(kind),
        ty,
        nullable: false,
    })
}

fn number(text: &str) -> Option<(Literal, SqlType)> {
    if text.contains(['e', 'E']) {
        return text
            .parse::<f64>()
            .ok()
            .map(|f| (Literal::Double(f), SqlType::Double));
    }
    if let Some((int, frac)) = text.split_once('.') {
        let digits = format!("{int}{frac}");
        let unscaled: i128 = digits.parse().ok()?;
        let scale = u8::try_from(frac.len()).ok()?;
        let significant = digits.trim_start_matches('0').len().max(1);
        let precision = u8::try_from(significant.max(usize::from(scale)).max(1)).ok()?;
        let ty = SqlType::decimal(precision, scale)?;
        return Some((Literal::Decimal(unscaled), ty));
    }
    let n: i128 = text.parse().ok()?;
    if let Ok(small) = i32::try_from(n) {
        Some((Literal::Integer(i64::from(small)), SqlType::Integer))
    } else if let Ok(big) = i64::try_from(n) {
        Some((Literal::Integer(big), SqlType::BigInt))
    } else {
        let precision = u8::try_from(n.unsigned_abs().to_string().len()).ok()?;
        Some((Literal::Decimal(n), SqlType::decimal(precision, 0)?))
    }
}

/// `DATE '...'` and `TIMESTAMP '...'`.
fn typed_literal(data_type: &DataType, value: &Value, at: &Ast) -> Result<Expr> {
    let Value::SingleQuotedString(text) = value else {
        return Err(unsupported("this typed literal", at.span()));
    };
    let bad = |what: &str| PlanError::user(format!("'{text}' is not a valid {what}"), at.span());
    let (kind, ty) = match data_type {
        DataType::Date => (
            Literal::Date(types::parse_date(text).ok_or_else(|| bad("DATE"))?),
            SqlType::Date,
        ),
        DataType::Timestamp(..) | DataType::Datetime(_) => (
            Literal::Timestamp(types::parse_timestamp(text).ok_or_else(|| bad("TIMESTAMP"))?),
            SqlType::Timestamp,
        ),
        _ => return Err(unsupported(&format!("{data_type} literals"), at.span())),
    };
    Ok(Expr {
        kind: ExprKind::Literal(kind),
        ty,
        nullable: false,
    })
}

/// Kylin's type names.
fn sql_type(data_type: &DataType, at: &Ast) -> Result<SqlType> {
    use DataType as D;
    Ok(match data_type {
        D::Boolean | D::Bool => SqlType::Boolean,
        D::TinyInt(_) => SqlType::TinyInt,
        D::SmallInt(_) => SqlType::SmallInt,
        D::Int(_) | D::Integer(_) => SqlType::Integer,
        D::BigInt(_) => SqlType::BigInt,
        D::Float(_) | D::Real => SqlType::Float,
        D::Double(_) | D::DoublePrecision => SqlType::Double,
        D::Decimal(info) | D::Numeric(info) | D::Dec(info) => {
            use ast::ExactNumberInfo as E;
            let (p, s) = match info {
                E::None => (10, 0),
                E::Precision(p) => (*p, 0),
                E::PrecisionAndScale(p, s) => (*p, u64::try_from(*s).unwrap_or(u64::MAX)),
            };
            u8::try_from(p)
                .ok()
                .zip(u8::try_from(s).ok())
                .and_then(|(p, s)| SqlType::decimal(p, s))
                .ok_or_else(|| {
                    PlanError::user(
                        format!("{data_type} is not a valid decimal type"),
                        at.span(),
                    )
                })?
        }
        D::Varchar(_)
        | D::Char(_)
        | D::String(_)
        | D::Text
        | D::CharacterVarying(_)
        | D::Character(_)
        | D::Nvarchar(_) => SqlType::Varchar,
        D::Date => SqlType::Date,
        D::Timestamp(..) | D::Datetime(_) => SqlType::Timestamp,
        other => return Err(unsupported(&format!("the type {other}"), at.span())),
    })
}

/// Renames a plan's columns to a table alias's column list, if it has one.
fn rename_columns(
    plan: Plan,
    columns: &[ast::TableAliasColumnDef],
    at: sqlparser::tokenizer::Span,
) -> Result<Plan> {
    if columns.is_empty() {
        return Ok(plan);
    }
    let fields = plan.fields();
    if fields.len() != columns.len() {
        return Err(PlanError::user(
            format!(
                "{} column names given for {} columns",
                columns.len(),
                fields.len()
            ),
            Position::from(at),
        ));
    }
    let renamed: Vec<Field> = fields
        .iter()
        .zip(columns)
        .map(|(f, c)| Field {
            name: label(&c.name),
            ..f.clone()
        })
        .collect();
    Ok(Plan::Project {
        exprs: renamed
            .iter()
            .enumerate()
            .map(|(i, f)| Expr::column(i, f))
            .collect(),
        input: Box::new(plan),
        fields: renamed,
    })
}

/// The plan with every output column qualified by `alias` (a table alias, a CTE's name), kept
/// as written: qualifiers are matched by the name rules when a column names one.
fn requalify(plan: Plan, alias: &Ident) -> Plan {
    with_qualifier(plan, Some(alias.value.clone()))
}

/// The plan with no qualifier on its columns (a subquery without an alias).
fn unqualify(plan: Plan) -> Plan {
    with_qualifier(plan, None)
}

fn with_qualifier(plan: Plan, qualifier: Option<String>) -> Plan {
    let fields: Vec<Field> = plan
        .fields()
        .iter()
        .map(|f| Field {
            qualifier: qualifier.clone(),
            ..f.clone()
        })
        .collect();
    Plan::Project {
        exprs: fields
            .iter()
            .enumerate()
            .map(|(i, f)| Expr::column(i, f))
            .collect(),
        input: Box::new(plan),
        fields,
    }
}
