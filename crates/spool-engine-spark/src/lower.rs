//! Lowers Spool's logical plan ([`spool_planner::Plan`]) to Spark SQL text: every relation,
//! column, function and literal is printed from the plan, so Spark runs what Spool bound, with
//! Kylin's semantics spelled out where Spark's own differ, the same as the Polars lowering.
//!
//! The printed text names nothing the client wrote: tables are the temporary views Spool
//! registers for the plan's scans (`spool_t0`, `spool_t1`, ...), columns are positional
//! (`c0`, `c1`, ... in every derived table; a scan reads the catalog's spelling, quoted), and
//! functions come from the planner's registry. That is the Spark sandbox: what does not bind
//! never reaches Spark, and what binds can only name the project's tables.
//!
//! Each node prints as one `SELECT` over its inputs as derived tables (`t`, or `l` and `r` for
//! a join); the result's labels and types are given by the outermost `SELECT`, which casts
//! every column to the plan's type. Semantics spelled out:
//! - integer `/` truncates towards zero (`DIV`), and any division or remainder by zero is NULL;
//! - a plan's conversions are `TRY_CAST` (NULL for a value that does not convert, as Kylin
//!   answers on Spark without ANSI mode), and a string literal converted by the plan is
//!   converted here, as on Polars;
//! - `LIKE` patterns have no escape character (Calcite's), so a backslash in a pattern is
//!   itself;
//! - a scalar subquery's one value raises an error over more than one row.

use std::fmt::Write as _;

use spool_planner::SqlType;
use spool_planner::plan::{
    Aggregate, AggregateFunction, Binary, Expr, ExprKind, Frame, JoinKind, Literal, Plan, Scalar,
    SortKey, TimeUnit, Unary, Window, WindowFunction, decimal_text,
};
use spool_planner::types::{Arithmetic, format_date, format_timestamp};

/// A plan printed as Spark SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Printed {
    /// The query.
    pub sql: String,
    /// The temporary views it reads, in order: (view name, schema, table).
    pub scans: Vec<(String, String, String)>,
}

/// Why a plan cannot be printed: an expression Spool's Spark lowering does not cover yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsupported(pub String);

type Printing<T> = Result<T, Unsupported>;

/// Prints `plan`; the result's columns carry the plan's labels ([`Plan::labels`]) and types.
pub(crate) fn print(plan: &Plan) -> Printing<Printed> {
    let mut printer = Printer { scans: Vec::new() };
    let labels = plan.labels();
    let fields = plan.fields();
    let outer = |i: usize, e: String| -> String {
        let label = quote(&labels[i]);
        match fields[i].ty {
            SqlType::Null => format!("{e} AS {label}"),
            ty => format!("CAST({e} AS {}) AS {label}", spark_type(ty)),
        }
    };
    let sql = printer.node(plan, &outer)?;
    Ok(Printed {
        sql,
        scans: printer.scans,
    })
}

/// The name of the `i`th column of every derived table.
fn c(i: usize) -> String {
    format!("c{i}")
}

/// `name` as a Spark identifier.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The Spark type of a plan's type.
pub(crate) fn spark_type(ty: SqlType) -> String {
    match ty {
        SqlType::Null => "VOID".to_owned(),
        SqlType::Boolean => "BOOLEAN".to_owned(),
        SqlType::TinyInt => "TINYINT".to_owned(),
        SqlType::SmallInt => "SMALLINT".to_owned(),
        SqlType::Integer => "INT".to_owned(),
        SqlType::BigInt => "BIGINT".to_owned(),
        SqlType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        SqlType::Float => "FLOAT".to_owned(),
        SqlType::Double => "DOUBLE".to_owned(),
        SqlType::Varchar => "STRING".to_owned(),
        SqlType::Date => "DATE".to_owned(),
        // Kylin's timestamps have no time zone; the session's zone is UTC besides.
        SqlType::Timestamp => "TIMESTAMP_NTZ".to_owned(),
    }
}

/// A string literal: Spark reads a backslash in one as an escape, so each is doubled.
fn string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

struct Printer {
    scans: Vec<(String, String, String)>,
}

/// Names the select list's items: the `i`th output column computed by `expr`.
type Out<'a> = &'a dyn Fn(usize, String) -> String;

/// The select list of `n` columns computed by `exprs`, or a placeholder for a relation of no
/// columns (`SELECT` needs one).
fn items(exprs: Vec<String>, out: Out<'_>) -> String {
    if exprs.is_empty() {
        return "1 AS `_unit`".to_owned();
    }
    exprs
        .into_iter()
        .enumerate()
        .map(|(i, e)| out(i, e))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns of a derived table `alias` of `n` columns, as select expressions.
fn passed(alias: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{alias}.{}", c(i))).collect()
}

impl Printer {
    /// A derived table for `plan`, its columns named `c0`, `c1`, ...
    fn relation(&mut self, plan: &Plan) -> Printing<String> {
        self.node(plan, &|i, e| format!("{e} AS {}", c(i)))
    }

    fn node(&mut self, plan: &Plan, out: Out<'_>) -> Printing<String> {
        let t = |i: usize| format!("t.{}", c(i));
        Ok(match plan {
            Plan::Scan {
                schema,
                table,
                fields,
            } => {
                let view = match self
                    .scans
                    .iter()
                    .find(|(_, s, n)| s == schema && n == table)
                {
                    Some((view, _, _)) => view.clone(),
                    None => {
                        let view = format!("spool_t{}", self.scans.len());
                        self.scans
                            .push((view.clone(), schema.clone(), table.clone()));
                        view
                    }
                };
                let columns = fields.iter().map(|f| quote(&f.name)).collect();
                format!("SELECT {} FROM {view}", items(columns, out))
            }
            Plan::Single => format!("SELECT {}", items(Vec::new(), out)),
            Plan::Filter { input, predicate } => {
                let from = self.relation(input)?;
                format!(
                    "SELECT {} FROM ({from}) t WHERE {}",
                    items(passed("t", input.fields().len()), out),
                    expr(predicate, &t)?
                )
            }
            Plan::Project { input, exprs, .. } => {
                let from = self.relation(input)?;
                let exprs = exprs.iter().map(|e| expr(e, &t)).collect::<Printing<_>>()?;
                format!("SELECT {} FROM ({from}) t", items(exprs, out))
            }
            Plan::Aggregate {
                input,
                groups,
                aggregates,
                ..
            } => {
                let from = self.relation(input)?;
                let mut exprs = groups
                    .iter()
                    .map(|e| expr(e, &t))
                    .collect::<Printing<Vec<_>>>()?;
                for a in aggregates {
                    exprs.push(aggregate(a, &t)?);
                }
                let mut sql = format!("SELECT {} FROM ({from}) t", items(exprs, out));
                if !groups.is_empty() {
                    // By position: the group keys are the select list's first items.
                    let ordinals: Vec<String> = (1..=groups.len()).map(|i| i.to_string()).collect();
                    let _ = write!(sql, " GROUP BY {}", ordinals.join(", "));
                }
                sql
            }
            Plan::Join {
                left,
                right,
                kind,
                on,
                ..
            } => {
                let n = left.fields().len();
                let (l, r) = (self.relation(left)?, self.relation(right)?);
                let both = |i: usize| {
                    if i < n {
                        format!("l.{}", c(i))
                    } else {
                        format!("r.{}", c(i - n))
                    }
                };
                let mut columns = passed("l", n);
                if !matches!(kind, JoinKind::Semi | JoinKind::Anti) {
                    columns.extend(passed("r", right.fields().len()));
                }
                let join = match kind {
                    JoinKind::Inner => "JOIN",
                    JoinKind::Left => "LEFT JOIN",
                    JoinKind::Right => "RIGHT JOIN",
                    JoinKind::Full => "FULL JOIN",
                    JoinKind::Cross => "CROSS JOIN",
                    JoinKind::Semi => "LEFT SEMI JOIN",
                    JoinKind::Anti => "LEFT ANTI JOIN",
                };
                let condition = match (kind, on) {
                    (JoinKind::Cross, _) => String::new(),
                    (_, Some(on)) => format!(" ON {}", expr(on, &both)?),
                    (_, None) => " ON TRUE".to_owned(),
                };
                format!(
                    "SELECT {} FROM ({l}) l {join} ({r}) r{condition}",
                    items(columns, out)
                )
            }
            Plan::Sort { input, keys } => self.sorted(input, keys, 0, None, out)?,
            Plan::Limit {
                input,
                offset,
                fetch,
            } => match input.as_ref() {
                // One SELECT sorts and limits: the rows kept are the first in the order.
                Plan::Sort { input, keys } => self.sorted(input, keys, *offset, *fetch, out)?,
                _ => self.sorted(input, &[], *offset, *fetch, out)?,
            },
            Plan::Window { input, windows, .. } => {
                let from = self.relation(input)?;
                let mut exprs = passed("t", input.fields().len());
                for w in windows {
                    exprs.push(window(w, &t)?);
                }
                format!("SELECT {} FROM ({from}) t", items(exprs, out))
            }
            Plan::Union { inputs, fields } => {
                let parts = inputs
                    .iter()
                    .map(|p| self.relation(p).map(|sql| format!("({sql})")))
                    .collect::<Printing<Vec<_>>>()?;
                format!(
                    "SELECT {} FROM ({}) t",
                    items(passed("t", fields.len()), out),
                    parts.join(" UNION ALL ")
                )
            }
            Plan::Distinct { input } => {
                let from = self.relation(input)?;
                format!(
                    "SELECT DISTINCT {} FROM ({from}) t",
                    items(passed("t", input.fields().len()), out)
                )
            }
        })
    }

    /// `input`'s rows ordered by `keys`, `offset` skipped, at most `fetch` kept.
    fn sorted(
        &mut self,
        input: &Plan,
        keys: &[SortKey],
        offset: u64,
        fetch: Option<u64>,
        out: Out<'_>,
    ) -> Printing<String> {
        let t = |i: usize| format!("t.{}", c(i));
        let from = self.relation(input)?;
        let mut sql = format!(
            "SELECT {} FROM ({from}) t",
            items(passed("t", input.fields().len()), out)
        );
        if !keys.is_empty() {
            let _ = write!(sql, " ORDER BY {}", order(keys, &t)?);
        }
        if let Some(fetch) = fetch {
            let _ = write!(sql, " LIMIT {fetch}");
        }
        if offset > 0 {
            let _ = write!(sql, " OFFSET {offset}");
        }
        Ok(sql)
    }
}

/// Sort keys, each with its direction and where its NULLs go.
fn order(keys: &[SortKey], col: &dyn Fn(usize) -> String) -> Printing<String> {
    let keys = keys
        .iter()
        .map(|k| {
            Ok(format!(
                "{} {} {}",
                expr(&k.expr, col)?,
                if k.descending { "DESC" } else { "ASC" },
                if k.nulls_first {
                    "NULLS FIRST"
                } else {
                    "NULLS LAST"
                }
            ))
        })
        .collect::<Printing<Vec<_>>>()?;
    Ok(keys.join(", "))
}

fn cast(text: String, ty: SqlType) -> String {
    match ty {
        SqlType::Null => text,
        ty => format!("CAST({text} AS {})", spark_type(ty)),
    }
}

fn aggregate(a: &Aggregate, col: &dyn Fn(usize) -> String) -> Printing<String> {
    let argument = a.argument.as_ref().map(|e| expr(e, col)).transpose()?;
    let distinct = if a.distinct { "DISTINCT " } else { "" };
    let one = || {
        argument
            .clone()
            .ok_or_else(|| Unsupported(format!("{:?} without an argument", a.function)))
    };
    let text = match a.function {
        AggregateFunction::CountRows => "count(*)".to_owned(),
        AggregateFunction::Count => format!("count({distinct}{})", one()?),
        AggregateFunction::Sum => format!("sum({distinct}{})", one()?),
        AggregateFunction::Avg => format!("avg({distinct}{})", one()?),
        AggregateFunction::StddevSamp => format!("stddev_samp({distinct}{})", one()?),
        AggregateFunction::StddevPop => format!("stddev_pop({distinct}{})", one()?),
        AggregateFunction::VarSamp => format!("var_samp({distinct}{})", one()?),
        AggregateFunction::VarPop => format!("var_pop({distinct}{})", one()?),
        AggregateFunction::Min => format!("min({})", one()?),
        AggregateFunction::Max => format!("max({})", one()?),
        AggregateFunction::Single => format!(
            "CASE WHEN count(*) > 1 THEN raise_error({}) ELSE first({}) END",
            string("a subquery used as a value returned more than one row"),
            one()?
        ),
    };
    Ok(cast(text, a.ty))
}

fn window(w: &Window, col: &dyn Fn(usize) -> String) -> Printing<String> {
    let argument = w.argument.as_ref().map(|e| expr(e, col)).transpose()?;
    let one = || {
        argument
            .clone()
            .ok_or_else(|| Unsupported(format!("{:?} without an argument", w.function)))
    };
    let function = match w.function {
        WindowFunction::Aggregate(f) => {
            let a = Aggregate {
                function: f,
                argument: w.argument.clone(),
                distinct: false,
                ty: SqlType::Null,
            };
            aggregate(&a, col)?
        }
        WindowFunction::RowNumber => "row_number()".to_owned(),
        WindowFunction::Rank => "rank()".to_owned(),
        WindowFunction::DenseRank => "dense_rank()".to_owned(),
        WindowFunction::Shift { offset } => {
            let default = match &w.default {
                Some(d) => expr(d, col)?,
                None => "NULL".to_owned(),
            };
            match offset {
                0 => return Ok(cast(one()?, w.ty)),
                n if n > 0 => format!("lag({}, {n}, {default})", one()?),
                n => format!("lead({}, {}, {default})", one()?, n.unsigned_abs()),
            }
        }
    };
    let mut over = Vec::new();
    if !w.partition.is_empty() {
        let partition = w
            .partition
            .iter()
            .map(|e| expr(e, col))
            .collect::<Printing<Vec<_>>>()?;
        over.push(format!("PARTITION BY {}", partition.join(", ")));
    }
    if !w.order.is_empty() {
        over.push(format!("ORDER BY {}", order(&w.order, col)?));
        // Spark's default frame with an ORDER BY is SQL's (RANGE ... CURRENT ROW).
        match (w.frame, w.function) {
            (_, WindowFunction::Aggregate(_)) if w.frame == Frame::RowsToCurrent => {
                over.push("ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW".to_owned());
            }
            (Frame::Whole, WindowFunction::Aggregate(_)) => {
                over.push("ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING".to_owned());
            }
            _ => {}
        }
    }
    Ok(cast(format!("{function} OVER ({})", over.join(" ")), w.ty))
}

fn literal(value: &Literal, ty: SqlType) -> Printing<String> {
    Ok(match value {
        Literal::Null => cast("NULL".to_owned(), ty),
        Literal::Boolean(true) => "TRUE".to_owned(),
        Literal::Boolean(false) => "FALSE".to_owned(),
        Literal::Integer(n) => cast(n.to_string(), ty),
        Literal::Decimal(unscaled) => match ty {
            SqlType::Decimal { scale, .. } => {
                cast(format!("{}BD", decimal_text(*unscaled, scale)), ty)
            }
            _ => return Err(Unsupported(format!("a decimal literal typed {ty}"))),
        },
        Literal::Double(f) if f.is_finite() => cast(format!("{f:e}D"), ty),
        Literal::Double(f) => {
            let text = if f.is_nan() {
                "NaN"
            } else if *f > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            cast(format!("CAST('{text}' AS DOUBLE)"), ty)
        }
        Literal::String(s) => string(s),
        Literal::Date(days) => format!("DATE '{}'", format_date(*days)),
        Literal::Timestamp(micros) => format!("TIMESTAMP_NTZ '{}'", format_timestamp(*micros)),
    })
}

/// `divisor` as NULL where it is zero: SQL's answer to a division by zero, as on Polars.
fn nonzero(divisor: String) -> String {
    format!("NULLIF({divisor}, 0)")
}

fn arithmetic(
    op: Arithmetic,
    l: &Expr,
    r: &Expr,
    ty: SqlType,
    col: &dyn Fn(usize) -> String,
) -> Printing<String> {
    let (a, b) = (expr(l, col)?, expr(r, col)?);
    let text = match op {
        Arithmetic::Add => format!("({a} + {b})"),
        Arithmetic::Subtract => format!("({a} - {b})"),
        Arithmetic::Multiply => format!("({a} * {b})"),
        Arithmetic::Modulo => format!("({a} % {})", nonzero(b)),
        Arithmetic::Divide => match ty {
            // Kylin divides integers as integers, truncating towards zero.
            t if t.is_integer() => format!("({a} DIV {})", nonzero(b)),
            SqlType::Decimal { .. } => format!("({a} / {})", nonzero(b)),
            _ => format!(
                "(CAST({a} AS DOUBLE) / {})",
                nonzero(format!("CAST({b} AS DOUBLE)"))
            ),
        },
    };
    Ok(cast(text, ty))
}

/// A LIKE pattern for Spark, whose LIKE escapes with a backslash: each backslash is doubled
/// so it stands for itself (Calcite's LIKE has no escape character).
fn like_pattern(pattern: &str) -> String {
    string(&pattern.replace('\\', "\\\\"))
}

/// Prints a scalar expression; `col(i)` names the input's `i`th column.
pub(crate) fn expr(e: &Expr, col: &dyn Fn(usize) -> String) -> Printing<String> {
    Ok(match &e.kind {
        ExprKind::Column(i) => col(*i),
        ExprKind::Literal(value) => literal(value, e.ty)?,
        ExprKind::Unary(Unary::Not, x) => format!("(NOT {})", expr(x, col)?),
        ExprKind::Unary(Unary::Negate, x) => cast(format!("(- {})", expr(x, col)?), e.ty),
        ExprKind::Binary(Binary::Arithmetic(op), l, r) => arithmetic(*op, l, r, e.ty, col)?,
        ExprKind::Binary(op, l, r) => {
            let (l, r) = (expr(l, col)?, expr(r, col)?);
            let symbol = match op {
                Binary::Eq => "=",
                Binary::NotEq => "<>",
                Binary::Lt => "<",
                Binary::LtEq => "<=",
                Binary::Gt => ">",
                Binary::GtEq => ">=",
                Binary::And => "AND",
                Binary::Or => "OR",
                Binary::NotDistinct => "<=>",
                Binary::Concat => return Ok(format!("concat({l}, {r})")),
                Binary::Arithmetic(_) => unreachable!("matched above"),
            };
            format!("({l} {symbol} {r})")
        }
        ExprKind::Cast(x) => match (&x.kind, x.ty) {
            // A string literal converted here, as on Polars.
            (ExprKind::Literal(Literal::String(s)), SqlType::Varchar)
                if e.ty != SqlType::Varchar =>
            {
                literal(&Literal::from_text(s, e.ty).unwrap_or(Literal::Null), e.ty)?
            }
            _ if e.ty == SqlType::Null => expr(x, col)?,
            _ => format!("TRY_CAST({} AS {})", expr(x, col)?, spark_type(e.ty)),
        },
        ExprKind::Case {
            branches,
            otherwise,
        } => {
            let mut text = "CASE".to_owned();
            for (when, then) in branches {
                let _ = write!(text, " WHEN {} THEN {}", expr(when, col)?, expr(then, col)?);
            }
            let _ = write!(text, " ELSE {} END", expr(otherwise, col)?);
            text
        }
        ExprKind::InList {
            expr: x,
            list,
            negated,
        } => {
            if list.is_empty() {
                return Ok(if *negated { "TRUE" } else { "FALSE" }.to_owned());
            }
            let list = list
                .iter()
                .map(|i| expr(i, col))
                .collect::<Printing<Vec<_>>>()?;
            let not = if *negated { "NOT " } else { "" };
            format!("({} {not}IN ({}))", expr(x, col)?, list.join(", "))
        }
        ExprKind::InKeys { expr: x, keys } => {
            if keys.is_empty() {
                return Ok("FALSE".to_owned());
            }
            let keys: Vec<String> = keys.iter().map(i64::to_string).collect();
            format!("({} IN ({}))", expr(x, col)?, keys.join(", "))
        }
        ExprKind::Like {
            expr: x,
            pattern,
            negated,
        } => {
            let ExprKind::Literal(Literal::String(p)) = &pattern.kind else {
                return Err(Unsupported(
                    "LIKE takes a literal pattern for now".to_owned(),
                ));
            };
            let not = if *negated { "NOT " } else { "" };
            format!("({} {not}LIKE {})", expr(x, col)?, like_pattern(p))
        }
        ExprKind::IsNull { expr: x, negated } => {
            let not = if *negated { "NOT " } else { "" };
            format!("({} IS {not}NULL)", expr(x, col)?)
        }
        ExprKind::Function(f, args) => function(*f, args, e.ty, col)?,
    })
}

fn function(
    f: Scalar,
    args: &[Expr],
    ty: SqlType,
    col: &dyn Fn(usize) -> String,
) -> Printing<String> {
    let args = args
        .iter()
        .map(|a| expr(a, col))
        .collect::<Printing<Vec<_>>>()?;
    let call = |name: &str| format!("{name}({})", args.join(", "));
    let text = match f {
        Scalar::Upper => call("upper"),
        Scalar::Lower => call("lower"),
        Scalar::Substring => call("substring"),
        Scalar::CharLength => call("char_length"),
        Scalar::Trim => call("trim"),
        Scalar::LTrim => call("ltrim"),
        Scalar::RTrim => call("rtrim"),
        Scalar::Coalesce => call("coalesce"),
        Scalar::Abs => call("abs"),
        Scalar::Round => call("round"),
        Scalar::Floor => call("floor"),
        Scalar::Ceil => call("ceil"),
        Scalar::Year => call("year"),
        Scalar::Quarter => call("quarter"),
        Scalar::Month => call("month"),
        Scalar::DayOfMonth => call("dayofmonth"),
        Scalar::DayOfWeek => call("dayofweek"),
        Scalar::DayOfYear => call("dayofyear"),
        Scalar::Week => call("weekofyear"),
        Scalar::Hour => call("hour"),
        Scalar::Minute => call("minute"),
        Scalar::Second => call("second"),
        Scalar::DateDiff => call("datediff"),
        Scalar::Replace => call("replace"),
        Scalar::Left => call("left"),
        Scalar::Right => call("right"),
        Scalar::Power => call("power"),
        Scalar::Sqrt => call("sqrt"),
        Scalar::DateAdd => call("date_add"),
        Scalar::FloorTo(unit) => {
            let unit = match unit {
                TimeUnit::Second => "SECOND",
                TimeUnit::Minute => "MINUTE",
                TimeUnit::Hour => "HOUR",
                TimeUnit::Day => "DAY",
                TimeUnit::Week => "WEEK",
                TimeUnit::Month => "MONTH",
                TimeUnit::Quarter => "QUARTER",
                TimeUnit::Year => "YEAR",
            };
            let value = args
                .first()
                .ok_or_else(|| Unsupported("FLOOR(... TO unit) without a value".to_owned()))?;
            format!("date_trunc('{unit}', {value})")
        }
    };
    Ok(cast(text, ty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_planner::{Catalog, Column, Table};

    fn catalog() -> Catalog {
        let mut catalog = Catalog::new("SHOP");
        catalog.add(Table {
            schema: "SHOP".to_owned(),
            name: "orders".to_owned(),
            columns: vec![
                Column::new("id", SqlType::Integer),
                Column::new("Price", SqlType::decimal(10, 2).expect("type")),
                Column::new("note", SqlType::Varchar),
            ],
            rows: None,
        });
        catalog.add(Table {
            schema: "EDW".to_owned(),
            name: "odd`name".to_owned(),
            columns: vec![Column::new("x", SqlType::Integer)],
            rows: None,
        });
        catalog
    }

    fn printed(sql: &str) -> Printed {
        // Bound as a view is (a client's text may not quote a name holding a backtick; a
        // table's file name may).
        let plan = spool_planner::bind_query(sql, &catalog())
            .map(spool_planner::passes::optimize)
            .expect(sql);
        print(&plan).expect(sql)
    }

    #[test]
    fn the_text_names_registered_views_and_positional_columns_only() {
        let p = printed(
            "select o.note as n, count(*) from orders o join edw.\"odd`name\" e on o.id = e.x \
             where note like 'a\\_%' group by note order by 2 desc limit 3",
        );
        assert_eq!(
            p.scans,
            [
                (
                    "spool_t0".to_owned(),
                    "SHOP".to_owned(),
                    "orders".to_owned()
                ),
                (
                    "spool_t1".to_owned(),
                    "EDW".to_owned(),
                    "odd`name".to_owned()
                ),
            ]
        );
        assert!(p.sql.contains("FROM spool_t1"), "{}", p.sql);
        // Names from the catalog are quoted as identifiers; the pattern's backslash is itself.
        assert!(
            p.sql.contains("`odd``name`") || !p.sql.contains("odd`name"),
            "{}",
            p.sql
        );
        assert!(p.sql.contains("LIKE 'a\\\\\\\\_%'"), "{}", p.sql);
        assert!(p.sql.ends_with("LIMIT 3"), "{}", p.sql);
        assert!(p.sql.contains("AS `N`"), "{}", p.sql);
        assert!(p.sql.contains("AS `EXPR$1`"), "{}", p.sql);
    }

    #[test]
    fn literals_print_as_the_plans_values() {
        let p = printed(
            "select 'it''s \\ here', 1.50, date '2024-02-29', timestamp '2024-01-02 03:04:05.5', \
             7 / 2, price / 3 from orders",
        );
        assert!(p.sql.contains("'it\\'s \\\\ here'"), "{}", p.sql);
        assert!(p.sql.contains("1.50BD"), "{}", p.sql);
        assert!(p.sql.contains("DATE '2024-02-29'"), "{}", p.sql);
        assert!(
            p.sql.contains("TIMESTAMP_NTZ '2024-01-02 03:04:05.500000'"),
            "{}",
            p.sql
        );
        assert!(p.sql.contains("DIV NULLIF("), "{}", p.sql);
    }

    #[test]
    fn format_date_and_timestamp_round_trip() {
        for text in [
            "1970-01-01",
            "1969-12-31",
            "2000-02-29",
            "1994-06-01",
            "0001-01-01",
        ] {
            let days = spool_planner::types::parse_date(text).expect(text);
            assert_eq!(format_date(days), text);
        }
        let micros =
            spool_planner::types::parse_timestamp("1965-03-04 05:06:07.000089").expect("ts");
        assert_eq!(format_timestamp(micros), "1965-03-04 05:06:07.000089");
    }
}
