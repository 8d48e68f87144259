//! The logical plan: what a query computes, with every name resolved and every type known.
//!
//! Nodes form a tree; each node's output is a list of [`Field`]s, and expressions refer to
//! their input's fields by position ([`Expr::Column`]), never by name, so no later pass or
//! engine lowering resolves a name again. Types are Kylin's ([`SqlType`]), fixed at binding.

use crate::types::SqlType;

/// A column of a node's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name the result reports (Calcite's label: an unquoted alias upper-cased, a column
    /// as the catalog spells it, `EXPR$n` for an unnamed expression).
    pub name: String,
    /// The relation a qualified reference may name it by (a table's name or alias).
    pub qualifier: Option<String>,
    /// Its SQL type.
    pub ty: SqlType,
    /// Whether it may hold NULL.
    pub nullable: bool,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `NULL`.
    Null,
    /// `TRUE` or `FALSE`.
    Boolean(bool),
    /// An integer literal (typed INTEGER, or BIGINT when it does not fit).
    Integer(i64),
    /// A decimal literal as written: `unscaled * 10^-scale`.
    Decimal(i128),
    /// A number with an exponent.
    Double(f64),
    /// A character string.
    String(String),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00:00.
    Timestamp(i64),
}

impl Literal {
    /// The string `text` converted to `ty` as Spark converts a string (surrounding spaces
    /// ignored; a decimal rounded half up at the type's scale); `None` when it is not a value
    /// of `ty` (SQL's answer is then NULL).
    pub fn from_text(text: &str, ty: SqlType) -> Option<Literal> {
        let text = text.trim();
        Some(match ty {
            SqlType::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => Literal::Boolean(true),
                "false" | "f" | "no" | "n" | "0" => Literal::Boolean(false),
                _ => return None,
            },
            t if t.is_integer() => Literal::Integer(text.parse().ok()?),
            SqlType::Decimal { scale, .. } => {
                let negative = text.starts_with('-');
                let digits = text.trim_start_matches(['-', '+']);
                let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
                if int.is_empty() && frac.is_empty()
                    || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                let scale = usize::from(scale);
                let mut kept: String = frac.chars().take(scale).collect();
                while kept.len() < scale {
                    kept.push('0');
                }
                let mut unscaled: i128 = format!("{int}{kept}").parse().ok()?;
                if frac.as_bytes().get(scale).is_some_and(|d| *d >= b'5') {
                    unscaled += 1;
                }
                Literal::Decimal(if negative { -unscaled } else { unscaled })
            }
            SqlType::Float | SqlType::Double => Literal::Double(text.parse().ok()?),
            SqlType::Date => Literal::Date(crate::types::parse_date(text)?),
            SqlType::Timestamp => Literal::Timestamp(crate::types::parse_timestamp(text)?),
            SqlType::Varchar => Literal::String(text.to_owned()),
            SqlType::Null => Literal::Null,
            _ => return None,
        })
    }
}

/// A decimal's text: `unscaled * 10^-scale` with `scale` digits after the point.
pub fn decimal_text(unscaled: i128, scale: u8) -> String {
    if scale == 0 {
        return unscaled.to_string();
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::from(scale);
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    format!("{sign}{int}.{frac}")
}

/// A unary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// Logical negation.
    Not,
    /// Arithmetic negation.
    Negate,
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `+ - * / %`, typed by [`crate::types::arithmetic`].
    Arithmetic(crate::types::Arithmetic),
    /// `=`.
    Eq,
    /// `<>`.
    NotEq,
    /// `<`.
    Lt,
    /// `<=`.
    LtEq,
    /// `>`.
    Gt,
    /// `>=`.
    GtEq,
    /// Three-valued `AND`.
    And,
    /// Three-valued `OR`.
    Or,
    /// `||`: string concatenation (NULL if either side is NULL).
    Concat,
    /// `IS NOT DISTINCT FROM`: equality where NULL equals NULL (never NULL itself).
    NotDistinct,
}

/// A scalar function of Spool's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// `UPPER(s)`.
    Upper,
    /// `LOWER(s)`.
    Lower,
    /// `SUBSTRING(s FROM start [FOR length])`, 1-based.
    Substring,
    /// `CHAR_LENGTH(s)`.
    CharLength,
    /// `TRIM(s)`: spaces at both ends.
    Trim,
    /// `COALESCE(a, b, ...)`: the first argument that is not NULL.
    Coalesce,
    /// `ABS(x)`.
    Abs,
    /// `ROUND(x[, scale])`, half away from zero.
    Round,
    /// `FLOOR(x)`.
    Floor,
    /// `CEIL(x)`.
    Ceil,
    /// `YEAR(d)`, `EXTRACT(YEAR FROM d)`.
    Year,
    /// `QUARTER(d)`.
    Quarter,
    /// `MONTH(d)`.
    Month,
    /// `DAYOFMONTH(d)`, `EXTRACT(DAY FROM d)`.
    DayOfMonth,
    /// `FLOOR(t TO unit)`: the start of the unit `t` falls in (weeks start on Monday, as
    /// Spark's `date_trunc`).
    FloorTo(TimeUnit),
    /// `DAYOFWEEK(d)`, `EXTRACT(DOW FROM d)`: 1 (Sunday) to 7 (Saturday), as Spark.
    DayOfWeek,
    /// `DAYOFYEAR(d)`, `EXTRACT(DOY FROM d)`: 1 to 366.
    DayOfYear,
    /// `WEEK(d)`, `WEEKOFYEAR(d)`, `EXTRACT(WEEK FROM d)`: the ISO week, 1 to 53.
    Week,
    /// `HOUR(t)`, `EXTRACT(HOUR FROM t)`.
    Hour,
    /// `MINUTE(t)`, `EXTRACT(MINUTE FROM t)`.
    Minute,
    /// `SECOND(t)`, `EXTRACT(SECOND FROM t)`: whole seconds.
    Second,
    /// `DATEDIFF(end, start)`: days from `start` to `end` (Spark's argument order).
    DateDiff,
    /// `REPLACE(s, search, replacement)`: every occurrence (an empty search changes nothing).
    Replace,
    /// `LEFT(s, n)`: the first `n` characters ('' for `n` <= 0).
    Left,
    /// `RIGHT(s, n)`: the last `n` characters ('' for `n` <= 0).
    Right,
    /// `LTRIM(s)`: spaces at the start.
    LTrim,
    /// `RTRIM(s)`: spaces at the end.
    RTrim,
    /// `POWER(x, y)`: a DOUBLE.
    Power,
    /// `SQRT(x)`: a DOUBLE (NaN below zero, as Spark).
    Sqrt,
    /// `d + n`, `DATE_ADD(d, n)`: the date `n` (an INTEGER, maybe negative) days after `d`.
    DateAdd,
}

/// A unit of time, ordered from the smallest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimeUnit {
    /// A second.
    Second,
    /// A minute.
    Minute,
    /// An hour.
    Hour,
    /// A day.
    Day,
    /// A week, from Monday.
    Week,
    /// A month.
    Month,
    /// A quarter of a year.
    Quarter,
    /// A year.
    Year,
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFunction {
    /// `COUNT(*)`: rows.
    CountRows,
    /// `COUNT(x)`: rows where `x` is not NULL.
    Count,
    /// `SUM(x)`: NULL over no rows.
    Sum,
    /// `AVG(x)`.
    Avg,
    /// `MIN(x)`.
    Min,
    /// `MAX(x)`.
    Max,
    /// The one value of a scalar subquery: NULL over no rows, an error over more than one.
    Single,
    /// `STDDEV_SAMP(x)`, `STDDEV(x)`: a DOUBLE; NULL over fewer than two values.
    StddevSamp,
    /// `STDDEV_POP(x)`: a DOUBLE; NULL over no values.
    StddevPop,
    /// `VAR_SAMP(x)`, `VARIANCE(x)`: a DOUBLE; NULL over fewer than two values.
    VarSamp,
    /// `VAR_POP(x)`: a DOUBLE; NULL over no values.
    VarPop,
}

/// An expression over a node's input, with its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it computes.
    pub kind: ExprKind,
    /// The type of its values.
    pub ty: SqlType,
    /// Whether it may be NULL.
    pub nullable: bool,
}

/// What an expression computes.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// The input's field at this position.
    Column(usize),
    /// A constant.
    Literal(Literal),
    /// An operator over one operand.
    Unary(Unary, Box<Expr>),
    /// An operator over two operands (comparisons: both of one type, cast by binding).
    Binary(Binary, Box<Expr>, Box<Expr>),
    /// A conversion to the expression's type.
    Cast(Box<Expr>),
    /// `CASE WHEN c THEN v ... ELSE e END` (a `CASE x WHEN` is bound to this form).
    Case {
        /// Each condition and the value it selects, in order.
        branches: Vec<(Expr, Expr)>,
        /// The value when no condition holds (NULL when the SQL has no ELSE).
        otherwise: Box<Expr>,
    },
    /// `expr [NOT] IN (list)`, every item of `expr`'s type.
    InList {
        /// The value looked for.
        expr: Box<Expr>,
        /// The values it is compared with.
        list: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `expr [NOT] LIKE pattern` (`%` and `_`).
    Like {
        /// The string matched.
        expr: Box<Expr>,
        /// The pattern.
        pattern: Box<Expr>,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `expr IS [NOT] NULL`.
    IsNull {
        /// The value tested.
        expr: Box<Expr>,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// A scalar function of the registry.
    Function(Scalar, Vec<Expr>),
    /// `expr IN (keys)` for an integer `expr` and a set of integer keys, ascending and
    /// distinct: what a dimension's filters keep of the key the fact table joins it on, written
    /// into the fact table's scan by the star-join pass (see `passes`). An engine tests it as
    /// it tests sets best (Polars: a bitmap over the keys' range).
    InKeys {
        /// The integer tested.
        expr: Box<Expr>,
        /// The keys.
        keys: std::sync::Arc<[i64]>,
    },
}

impl Expr {
    /// A reference to the input's field `index`.
    pub fn column(index: usize, field: &Field) -> Self {
        Self {
            kind: ExprKind::Column(index),
            ty: field.ty,
            nullable: field.nullable,
        }
    }

    /// The expression with each column reference `i` replaced by `map(i)`.
    pub fn remap(self, map: &dyn Fn(usize) -> usize) -> Expr {
        let kind = match self.kind {
            ExprKind::Column(i) => ExprKind::Column(map(i)),
            ExprKind::Literal(l) => ExprKind::Literal(l),
            ExprKind::Unary(op, x) => ExprKind::Unary(op, Box::new(x.remap(map))),
            ExprKind::Cast(x) => ExprKind::Cast(Box::new(x.remap(map))),
            ExprKind::Binary(op, l, r) => {
                ExprKind::Binary(op, Box::new(l.remap(map)), Box::new(r.remap(map)))
            }
            ExprKind::Case {
                branches,
                otherwise,
            } => ExprKind::Case {
                branches: branches
                    .into_iter()
                    .map(|(c, t)| (c.remap(map), t.remap(map)))
                    .collect(),
                otherwise: Box::new(otherwise.remap(map)),
            },
            ExprKind::InList {
                expr,
                list,
                negated,
            } => ExprKind::InList {
                expr: Box::new(expr.remap(map)),
                list: list.into_iter().map(|i| i.remap(map)).collect(),
                negated,
            },
            ExprKind::Like {
                expr,
                pattern,
                negated,
            } => ExprKind::Like {
                expr: Box::new(expr.remap(map)),
                pattern: Box::new(pattern.remap(map)),
                negated,
            },
            ExprKind::IsNull { expr, negated } => ExprKind::IsNull {
                expr: Box::new(expr.remap(map)),
                negated,
            },
            ExprKind::Function(f, args) => {
                ExprKind::Function(f, args.into_iter().map(|a| a.remap(map)).collect())
            }
            ExprKind::InKeys { expr, keys } => ExprKind::InKeys {
                expr: Box::new(expr.remap(map)),
                keys,
            },
        };
        Expr { kind, ..self }
    }

    /// The input fields the expression reads, in the order met (with repeats).
    pub fn columns(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match &e.kind {
                ExprKind::Column(i) => out.push(*i),
                ExprKind::Literal(_) => {}
                ExprKind::Unary(_, x) | ExprKind::Cast(x) => stack.push(x),
                ExprKind::Binary(_, l, r) => stack.extend([r.as_ref(), l.as_ref()]),
                ExprKind::Case {
                    branches,
                    otherwise,
                } => {
                    stack.push(otherwise);
                    for (c, t) in branches.iter().rev() {
                        stack.extend([t, c]);
                    }
                }
                ExprKind::InList { expr, list, .. } => {
                    stack.extend(list.iter().rev());
                    stack.push(expr);
                }
                ExprKind::Like { expr, pattern, .. } => {
                    stack.extend([pattern.as_ref(), expr.as_ref()]);
                }
                ExprKind::IsNull { expr, .. } | ExprKind::InKeys { expr, .. } => stack.push(expr),
                ExprKind::Function(_, args) => stack.extend(args.iter().rev()),
            }
        }
        out
    }
}

/// One aggregate of an [`Plan::Aggregate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Which aggregate.
    pub function: AggregateFunction,
    /// Its argument (none for `COUNT(*)`).
    pub argument: Option<Expr>,
    /// Over distinct values of the argument only.
    pub distinct: bool,
    /// The type it returns.
    pub ty: SqlType,
}

/// What a window function computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFunction {
    /// An aggregate over the window's frame.
    Aggregate(AggregateFunction),
    /// `ROW_NUMBER()`: 1, 2, ... in the window's order.
    RowNumber,
    /// `RANK()`: tied rows share a rank, which then skips.
    Rank,
    /// `DENSE_RANK()`: tied rows share a rank, which does not skip.
    DenseRank,
    /// `LAG(x[, n[, default]])` (`offset` n) and `LEAD(...)` (`offset` -n): `x` at the row `n`
    /// rows before (after) the current one in the window's order within its partition, or
    /// the window's `default` (NULL when it has none) where there is no such row. Ties are
    /// not one step: each row is its own.
    Shift {
        /// Rows back (negative: ahead).
        offset: i64,
    },
}

/// Which rows of its partition a window aggregate is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frame {
    /// SQL's default: with an ORDER BY, from the partition's start to the current row and
    /// every row tied with it (`RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`); without,
    /// the whole partition.
    #[default]
    Default,
    /// `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`: the rows up to the current one in
    /// the window's order, ties not one step.
    RowsToCurrent,
    /// `... BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING`: the whole partition.
    Whole,
}

/// One window function of a [`Plan::Window`], over its [`Frame`].
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// What it computes.
    pub function: WindowFunction,
    /// Its argument (none for `COUNT(*)` and the ranks).
    pub argument: Option<Expr>,
    /// `PARTITION BY`, over the input.
    pub partition: Vec<Expr>,
    /// `ORDER BY`, over the input.
    pub order: Vec<SortKey>,
    /// `LAG`/`LEAD`'s value where there is no row at the offset (of the argument's type).
    pub default: Option<Expr>,
    /// The rows an aggregate is over.
    pub frame: Frame,
    /// The type it returns.
    pub ty: SqlType,
}

impl Window {
    /// The window with each column reference `i` of its expressions replaced by `map(i)`.
    pub fn remap(self, map: &dyn Fn(usize) -> usize) -> Window {
        Window {
            argument: self.argument.map(|e| e.remap(map)),
            partition: self.partition.into_iter().map(|e| e.remap(map)).collect(),
            order: self
                .order
                .into_iter()
                .map(|k| SortKey {
                    expr: k.expr.remap(map),
                    ..k
                })
                .collect(),
            default: self.default.map(|e| e.remap(map)),
            ..self
        }
    }
}

/// How a join keeps rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Pairs that meet the condition.
    Inner,
    /// Inner, plus left rows without a partner (NULLs on the right).
    Left,
    /// Inner, plus right rows without a partner.
    Right,
    /// Inner, plus both sides' rows without a partner.
    Full,
    /// Every pair.
    Cross,
    /// The left rows that have a partner, once each; only the left side's columns (what
    /// `x IN (subquery)` and `EXISTS` become).
    Semi,
    /// The left rows without a partner; only the left side's columns (what a correlated
    /// `NOT EXISTS` becomes).
    Anti,
}

/// How an engine may compute a join; every strategy gives the join's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JoinStrategy {
    /// As the engine joins by default (Polars: hashing one side, probing with the other).
    #[default]
    Hash,
    /// An inner join of a much larger left side (a star's fact rows) with a dimension on one
    /// integer key of the dimension: the engine may find each left row's dimension row by its
    /// key in an array over the dimension's key range, when the key is unique there (it checks,
    /// and hashes otherwise). Set by the star-join pass (`passes`, its `folds` lever).
    Lookup {
        /// The left side's key column.
        left: usize,
        /// The dimension's key column (in the right side's own numbering).
        right: usize,
    },
}

/// One key of a sort.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// What is sorted by.
    pub expr: Expr,
    /// Largest first.
    pub descending: bool,
    /// Where NULLs go; Kylin's default puts them first ascending and last descending (NULL
    /// is the smallest value, `defaultNullCollation` LOW).
    pub nulls_first: bool,
}

/// A logical plan node.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// A table of the catalog, all its columns.
    Scan {
        /// The table's schema, as the catalog spells it.
        schema: String,
        /// The table, as the catalog spells it.
        table: String,
        /// Its columns.
        fields: Vec<Field>,
    },
    /// One row of no columns (`SELECT 1` without FROM).
    Single,
    /// The input's rows for which `predicate` is TRUE.
    Filter {
        /// The rows filtered.
        input: Box<Plan>,
        /// A BOOLEAN over the input.
        predicate: Expr,
    },
    /// One output row per input row, of `exprs`.
    Project {
        /// The rows projected.
        input: Box<Plan>,
        /// One expression per output column.
        exprs: Vec<Expr>,
        /// The output columns.
        fields: Vec<Field>,
    },
    /// Groups by `groups` (none: one group over all rows); the output is the group keys, then
    /// the aggregates.
    Aggregate {
        /// The rows grouped.
        input: Box<Plan>,
        /// The group keys, over the input.
        groups: Vec<Expr>,
        /// The aggregates computed per group.
        aggregates: Vec<Aggregate>,
        /// The output columns.
        fields: Vec<Field>,
    },
    /// The left input's fields, then the right's; `on` is over both.
    Join {
        /// The left input.
        left: Box<Plan>,
        /// The right input.
        right: Box<Plan>,
        /// Which rows are kept.
        kind: JoinKind,
        /// The join condition (none for a cross join).
        on: Option<Expr>,
        /// How an engine may compute it (the same rows either way).
        strategy: JoinStrategy,
        /// The output columns.
        fields: Vec<Field>,
    },
    /// The input's rows in order of `keys`.
    Sort {
        /// The rows sorted.
        input: Box<Plan>,
        /// The sort keys, most significant first.
        keys: Vec<SortKey>,
    },
    /// At most `fetch` of the input's rows after skipping `offset`.
    Limit {
        /// The rows limited.
        input: Box<Plan>,
        /// Rows skipped.
        offset: u64,
        /// Rows kept at most (`None`: all).
        fetch: Option<u64>,
    },
    /// The input's rows, each with one more column per window function.
    Window {
        /// The rows the windows are over.
        input: Box<Plan>,
        /// The window functions, in the order of their columns.
        windows: Vec<Window>,
        /// The input's columns, then one per window function.
        fields: Vec<Field>,
    },
    /// Every input's rows, one input after the other (`UNION ALL`); the inputs' columns have
    /// the output's types.
    Union {
        /// The inputs, in order.
        inputs: Vec<Plan>,
        /// The output columns.
        fields: Vec<Field>,
    },
    /// Rows without duplicates (`SELECT DISTINCT`).
    Distinct {
        /// The rows made distinct.
        input: Box<Plan>,
    },
}

impl Plan {
    /// The result's column labels: the output fields' names, a name used again getting `_1`,
    /// `_2`, ... after it (a result's labels are unique, on every engine).
    pub fn labels(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for field in self.fields() {
            let mut label = field.name.clone();
            let mut n = 0;
            while seen.contains(&label) {
                n += 1;
                label = format!("{}_{n}", field.name);
            }
            seen.push(label);
        }
        seen
    }

    /// The plan paged by a request's `offset` and `limit` (the synchronous API's paging),
    /// unless the SQL has a LIMIT or OFFSET of its own or the request pages nothing.
    pub fn paged(self, offset: Option<u64>, limit: Option<u64>) -> Plan {
        match self {
            Plan::Limit { .. } => self,
            _ if offset.is_none() && limit.is_none() => self,
            _ => Plan::Limit {
                input: Box::new(self),
                offset: offset.unwrap_or(0),
                fetch: limit,
            },
        }
    }

    /// The node's output.
    pub fn fields(&self) -> &[Field] {
        match self {
            Self::Scan { fields, .. }
            | Self::Project { fields, .. }
            | Self::Aggregate { fields, .. }
            | Self::Join { fields, .. }
            | Self::Union { fields, .. }
            | Self::Window { fields, .. } => fields,
            Self::Single => &[],
            Self::Filter { input, .. }
            | Self::Sort { input, .. }
            | Self::Limit { input, .. }
            | Self::Distinct { input } => input.fields(),
        }
    }

    /// The node's name and its children, for [`Plan::explain`].
    fn describe(&self) -> (String, Vec<&Plan>) {
        match self {
            Self::Scan { schema, table, .. } => (format!("Scan {schema}.{table}"), vec![]),
            Self::Single => ("Single".to_owned(), vec![]),
            Self::Filter { input, predicate } => {
                (format!("Filter {}", show(predicate)), vec![input])
            }
            Self::Project {
                input,
                exprs,
                fields,
            } => {
                let items: Vec<String> = exprs
                    .iter()
                    .zip(fields)
                    .map(|(e, f)| format!("{} AS {}", show(e), f.name))
                    .collect();
                (format!("Project {}", items.join(", ")), vec![input])
            }
            Self::Aggregate {
                input,
                groups,
                aggregates,
                ..
            } => {
                let groups: Vec<String> = groups.iter().map(show).collect();
                let aggregates: Vec<String> = aggregates
                    .iter()
                    .map(|a| {
                        let argument = a.argument.as_ref().map_or("*".to_owned(), show);
                        let distinct = if a.distinct { "DISTINCT " } else { "" };
                        format!("{:?}({distinct}{argument}): {}", a.function, a.ty)
                    })
                    .collect();
                (
                    format!(
                        "Aggregate by [{}] computing [{}]",
                        groups.join(", "),
                        aggregates.join(", ")
                    ),
                    vec![input],
                )
            }
            Self::Join {
                left,
                right,
                kind,
                on,
                strategy,
                ..
            } => (
                format!(
                    "Join {kind:?}{}{}",
                    on.as_ref()
                        .map_or(String::new(), |on| format!(" on {}", show(on))),
                    match strategy {
                        JoinStrategy::Hash => "",
                        JoinStrategy::Lookup { .. } => " by lookup",
                    }
                ),
                vec![left, right],
            ),
            Self::Sort { input, keys } => {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        format!(
                            "{}{}{}",
                            show(&k.expr),
                            if k.descending { " DESC" } else { "" },
                            if k.nulls_first {
                                " NULLS FIRST"
                            } else {
                                " NULLS LAST"
                            }
                        )
                    })
                    .collect();
                (format!("Sort {}", keys.join(", ")), vec![input])
            }
            Self::Limit {
                input,
                offset,
                fetch,
            } => (
                format!(
                    "Limit {} offset {offset}",
                    fetch.map_or("all".to_owned(), |f| f.to_string())
                ),
                vec![input],
            ),
            Self::Distinct { input } => ("Distinct".to_owned(), vec![input]),
            Self::Union { inputs, .. } => ("Union".to_owned(), inputs.iter().collect()),
            Self::Window { input, windows, .. } => {
                let windows: Vec<String> = windows
                    .iter()
                    .map(|w| {
                        let argument = w.argument.as_ref().map_or(String::new(), show);
                        let partition: Vec<String> = w.partition.iter().map(show).collect();
                        let order: Vec<String> = w
                            .order
                            .iter()
                            .map(|k| {
                                format!(
                                    "{}{}",
                                    show(&k.expr),
                                    if k.descending { " DESC" } else { "" }
                                )
                            })
                            .collect();
                        format!(
                            "{:?}({argument}) over [{}] by [{}]: {}",
                            w.function,
                            partition.join(", "),
                            order.join(", "),
                            w.ty
                        )
                    })
                    .collect();
                (format!("Window {}", windows.join(", ")), vec![input])
            }
        }
    }

    /// The plan as indented text, one node a line: for tests and the log.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let mut stack = vec![(self, 0usize)];
        while let Some((node, depth)) = stack.pop() {
            let (line, children) = node.describe();
            out.push_str(&"  ".repeat(depth));
            out.push_str(&line);
            out.push('\n');
            for child in children.into_iter().rev() {
                stack.push((child, depth + 1));
            }
        }
        out
    }
}

/// An expression as short text for [`Plan::explain`]: columns by position (`#2`).
pub fn show(expr: &Expr) -> String {
    match &expr.kind {
        ExprKind::Column(i) => format!("#{i}"),
        ExprKind::Literal(Literal::String(s)) => format!("'{}'", s.replace('\'', "''")),
        ExprKind::Literal(Literal::Decimal(unscaled)) => match expr.ty {
            SqlType::Decimal { scale, .. } => decimal_text(*unscaled, scale),
            _ => unscaled.to_string(),
        },
        ExprKind::Literal(literal) => format!("{literal:?}"),
        ExprKind::Unary(op, e) => format!("{op:?}({})", show(e)),
        ExprKind::Binary(op, l, r) => format!("({} {} {})", show(l), binary_symbol(*op), show(r)),
        ExprKind::Cast(e) => format!("CAST({} AS {})", show(e), expr.ty),
        ExprKind::Case {
            branches,
            otherwise,
        } => {
            let mut text = "CASE".to_owned();
            for (when, then) in branches {
                text.push_str(&format!(" WHEN {} THEN {}", show(when), show(then)));
            }
            format!("{text} ELSE {} END", show(otherwise))
        }
        ExprKind::InList {
            expr,
            list,
            negated,
        } => {
            let list: Vec<String> = list.iter().map(show).collect();
            let not = if *negated { " NOT" } else { "" };
            format!("{}{not} IN ({})", show(expr), list.join(", "))
        }
        ExprKind::Like {
            expr,
            pattern,
            negated,
        } => {
            let not = if *negated { " NOT" } else { "" };
            format!("{}{not} LIKE {}", show(expr), show(pattern))
        }
        ExprKind::IsNull { expr, negated } => {
            let not = if *negated { " NOT" } else { "" };
            format!("{} IS{not} NULL", show(expr))
        }
        ExprKind::Function(f, args) => {
            let args: Vec<String> = args.iter().map(show).collect();
            format!("{f:?}({})", args.join(", "))
        }
        ExprKind::InKeys { expr, keys } => match (keys.first(), keys.last()) {
            (Some(low), Some(high)) => format!(
                "{} IN KEYS ({} keys, {low}..={high})",
                show(expr),
                keys.len()
            ),
            _ => format!("{} IN KEYS ()", show(expr)),
        },
    }
}

fn binary_symbol(op: Binary) -> &'static str {
    use crate::types::Arithmetic as A;
    match op {
        Binary::NotDistinct => "IS NOT DISTINCT FROM",
        Binary::Arithmetic(A::Add) => "+",
        Binary::Arithmetic(A::Subtract) => "-",
        Binary::Arithmetic(A::Multiply) => "*",
        Binary::Arithmetic(A::Divide) => "/",
        Binary::Arithmetic(A::Modulo) => "%",
        Binary::Eq => "=",
        Binary::NotEq => "<>",
        Binary::Lt => "<",
        Binary::LtEq => "<=",
        Binary::Gt => ">",
        Binary::GtEq => ">=",
        Binary::And => "AND",
        Binary::Or => "OR",
        Binary::Concat => "||",
    }
}
