//! SQL rules every engine applies the same way, on sqlparser's AST (never on the text):
//!
//! - [`parse_query`]: exactly one statement, and it must be a read-only query (`SELECT`, `WITH`,
//!   `VALUES`, set operations); the messages for everything else are the same on every engine;
//! - [`apply_paging`]: the request's `offset` / `limit` apply unless the SQL has its own;
//! - [`name_computed_columns`]: unaliased computed output columns get Calcite's (and so Kylin's)
//!   names `EXPR$<position>`, so a result has the same header whichever engine ran it;
//! - [`check_from_item`], [`project_relation`], [`cte_names`]: the relation rules of every
//!   sandbox (no table functions, only the project's own tables, optionally qualified with its
//!   name, and the query's CTEs).
//!
//! Each engine then checks the relations and functions a query may use against its own catalog
//! (an engine's sandbox), and rewrites what it runs differently. [`faithful`] makes sure that
//! the text an engine is finally handed means what was checked.

use sqlparser::ast::{
    Expr, Ident, LimitClause, ObjectName, ObjectNamePart, Offset, OffsetRows, OrderBy, OrderByKind,
    Query, SelectItem, SetExpr, Statement, TableFactor, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

pub mod faithful;

/// Why an engine's sandbox returned no text to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The user's SQL is invalid, unsupported or out of bounds; the message is for them.
    Query(String),
    /// Spool's own rewriting went wrong (its text would not read back as the checked query);
    /// the message is for the log.
    Internal(String),
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Self::Query(message)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Query(message) | Self::Internal(message) => f.write_str(message),
        }
    }
}

/// Parses `sql` as Kylin's clients write it (sqlparser's generic dialect) and returns its one
/// statement, a query; anything else is refused with a message for the user. Quoted names and
/// literals that could not be passed on to an engine unchanged are refused here
/// ([`faithful::check_tokens`]), and so is a statement that does not print back as itself.
pub fn parse_query(sql: &str) -> Result<Statement, String> {
    faithful::check_tokens(sql)?;
    let mut statements = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| format!("SQL syntax error: {}", strip_parser_prefix(&e.to_string())))?;
    let statement = match statements.len() {
        1 => statements.remove(0),
        0 => return Err("the SQL text holds no statement".to_owned()),
        n => {
            return Err(format!(
                "only one statement may be sent at a time; found {n}"
            ));
        }
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err(format!(
            "only read-only queries (SELECT, WITH, VALUES) may run; {} statements are not allowed",
            statement_kind(&statement)
        ));
    }
    // `TABLE x` names a relation as plain text, where no relation check would see it.
    let mut bodies = Bodies(None);
    let _ = sqlparser::ast::Visit::visit(&statement, &mut bodies);
    if let Some(e) = bodies.0 {
        return Err(e);
    }
    if let Err(e) = faithful::print_verified(&statement) {
        return Err(format!(
            "this SQL cannot be run as written: it does not read back the same once printed ({})",
            e.reason
        ));
    }
    Ok(statement)
}

/// Refuses a query body that is not a SELECT, VALUES, a parenthesized query or a set
/// operation of those: `TABLE x` (which names its relation as text no relation check sees) and
/// statements nested as bodies.
pub fn check_body(body: &SetExpr) -> Result<(), String> {
    match body {
        SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) => Ok(()),
        SetExpr::SetOperation { left, right, .. } => {
            check_body(left)?;
            check_body(right)
        }
        SetExpr::Table(table) => Err(format!(
            "'{table}' is not supported; write SELECT * FROM {}",
            table.table_name.as_deref().unwrap_or("...")
        )),
        other => Err(format!(
            "only read-only queries may run; '{}' is not one",
            other.to_string().chars().take(40).collect::<String>()
        )),
    }
}

/// Finds the first query body [`check_body`] refuses.
struct Bodies(Option<String>);

impl sqlparser::ast::Visitor for Bodies {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> std::ops::ControlFlow<()> {
        match check_body(&query.body) {
            Ok(()) => std::ops::ControlFlow::Continue(()),
            Err(e) => {
                self.0 = Some(e);
                std::ops::ControlFlow::Break(())
            }
        }
    }
}

/// The parser's message without its "sql parser error: " prefix.
pub fn strip_parser_prefix(message: &str) -> &str {
    message
        .strip_prefix("sql parser error: ")
        .unwrap_or(message)
}

/// Names the kind of a statement for an error message: its leading keywords.
pub fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(2)
        .collect();
    match words.as_slice() {
        [] => "such".to_owned(),
        [first, second]
            if matches!(
                first.to_ascii_uppercase().as_str(),
                "CREATE" | "DROP" | "ALTER" | "SHOW" | "TRUNCATE"
            ) =>
        {
            format!(
                "{} {}",
                first.to_ascii_uppercase(),
                second.to_ascii_uppercase()
            )
        }
        [first, ..] => first.to_ascii_uppercase(),
    }
}

fn number(n: u64) -> Expr {
    Expr::value(Value::Number(n.to_string(), false))
}

/// Applies the request's paging where the SQL has none of its own.
pub fn apply_paging(query: &mut Query, offset: Option<u64>, limit: Option<u64>) {
    if offset.is_none() && limit.is_none() {
        return;
    }
    // `LIMIT a, b` (MySQL) sets both; nothing to add.
    if matches!(
        query.limit_clause,
        Some(LimitClause::OffsetCommaLimit { .. })
    ) {
        return;
    }
    let (mut sql_limit, mut sql_offset, limit_by) = match query.limit_clause.take() {
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => (limit, offset, limit_by),
        _ => (None, None, Vec::new()),
    };
    if sql_limit.is_none() {
        sql_limit = limit.map(number);
    }
    if sql_offset.is_none() {
        sql_offset = offset.map(|o| Offset {
            value: number(o),
            rows: OffsetRows::None,
        });
    }
    query.limit_clause = Some(LimitClause::LimitOffset {
        limit: sql_limit,
        offset: sql_offset,
        limit_by,
    });
}

/// Names unaliased computed output columns of the outermost SELECT `EXPR$<position>`.
pub fn name_computed_columns(query: &mut Query) {
    let mut body = query.body.as_mut();
    let query_order_by = &mut query.order_by;
    loop {
        match body {
            SetExpr::SetOperation { left, .. } => body = left.as_mut(),
            SetExpr::Select(select) => {
                let mut named = Vec::new();
                for (i, item) in select.projection.iter_mut().enumerate() {
                    if let SelectItem::UnnamedExpr(expr) = item
                        && !matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
                    {
                        let alias = Ident::with_quote('"', format!("EXPR${i}"));
                        named.push((expr.clone(), alias.clone()));
                        *item = SelectItem::ExprWithAlias {
                            expr: expr.clone(),
                            alias,
                        };
                    }
                }
                // ORDER BY may repeat a computed column's expression; point it at the name.
                if let Some(OrderBy {
                    kind: OrderByKind::Expressions(items),
                    ..
                }) = query_order_by.as_mut()
                {
                    for item in items {
                        if let Some((_, alias)) = named.iter().find(|(e, _)| *e == item.expr) {
                            item.expr = Expr::Identifier(alias.clone());
                        }
                    }
                }
                return;
            }
            _ => return,
        }
    }
}

/// The names of the CTEs `query` defines, lowercase.
pub fn cte_names(query: &Query) -> impl Iterator<Item = String> + '_ {
    query
        .with
        .iter()
        .flat_map(|with| &with.cte_tables)
        .map(|cte| cte.alias.name.value.to_lowercase())
}

/// Refuses every FROM item but a plain table name, a subquery and a parenthesized join: table
/// functions (`read_csv(...)`, `read_files(...)`, `range(10)`) and `UNNEST`, `TABLE(...)`, ...
/// could read what no project holds.
pub fn check_from_item(factor: &TableFactor) -> Result<(), String> {
    match factor {
        TableFactor::Table {
            name,
            args: Some(_),
            ..
        } => Err(format!(
            "table functions are not allowed: {name}(...); a query reads only the project's tables"
        )),
        TableFactor::Table { .. }
        | TableFactor::Derived { .. }
        | TableFactor::NestedJoin { .. } => Ok(()),
        other => {
            let text = other.to_string();
            let head: String = text.chars().take(40).collect();
            Err(format!(
                "this kind of FROM item is not supported: {head}; a query reads only the project's tables"
            ))
        }
    }
}

/// A relation as written: its table identifier and whether it was qualified (with the
/// project's name: `SSB.P_LINEORDER`, the qualifier compared ignoring ASCII case unless quoted).
/// Any other qualifier, or more parts, is refused with the message for the user.
pub fn project_relation<'a>(
    relation: &'a ObjectName,
    project: &str,
) -> Result<(&'a Ident, bool), String> {
    let parts: Option<Vec<&Ident>> = relation.0.iter().map(ObjectNamePart::as_ident).collect();
    let Some(parts) = parts else {
        return Err(format!("table name {relation} is not supported"));
    };
    match parts.as_slice() {
        [table] => Ok((table, false)),
        [qualifier, table] => {
            let same = if qualifier.quote_style.is_some() {
                qualifier.value == project
            } else {
                qualifier.value.eq_ignore_ascii_case(project)
            };
            if same {
                Ok((table, true))
            } else {
                Err(format!(
                    "table '{relation}' not found: a query reads only the tables of project '{project}'"
                ))
            }
        }
        _ => Err(format!(
            "table '{relation}' not found in project '{project}'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Box<Query> {
        match parse_query(sql).expect("a query") {
            Statement::Query(q) => q,
            _ => unreachable!(),
        }
    }

    #[test]
    fn only_one_read_only_statement_is_accepted() {
        assert_eq!(
            parse_query("select 1; select 2").expect_err("two"),
            "only one statement may be sent at a time; found 2"
        );
        assert_eq!(
            parse_query("drop table t").expect_err("ddl"),
            "only read-only queries (SELECT, WITH, VALUES) may run; DROP TABLE statements are not allowed"
        );
        assert_eq!(
            parse_query("insert into t values (1)").expect_err("dml"),
            "only read-only queries (SELECT, WITH, VALUES) may run; INSERT statements are not allowed"
        );
        assert!(
            parse_query("select from")
                .expect_err("syntax")
                .starts_with("SQL syntax error: ")
        );
        assert!(parse_query("with a as (select 1) select * from a").is_ok());
        // `TABLE x` names its relation as text no relation check sees: refused everywhere.
        for sql in [
            "select 1 union all table global_temp.t",
            "select * from (table parquet.x) as y",
        ] {
            let e = parse_query(sql).expect_err(sql);
            assert!(
                e.contains("is not supported; write SELECT * FROM"),
                "{sql}: {e}"
            );
        }
    }

    #[test]
    fn relations_are_the_projects_or_refused() {
        let name = |t: &str| {
            ObjectName(
                t.split('.')
                    .map(|p| ObjectNamePart::Identifier(Ident::new(p)))
                    .collect(),
            )
        };
        let t = name("SSB.lineorder");
        assert_eq!(
            project_relation(&t, "ssb").expect("ok").0.value,
            "lineorder"
        );
        assert!(
            project_relation(&name("other.t"), "ssb")
                .expect_err("other")
                .contains("only the tables of project 'ssb'")
        );
        assert!(
            project_relation(&name("a.b.c"), "ssb")
                .expect_err("three")
                .contains("not found in project 'ssb'")
        );
        let q = query("select * from read_files('/etc')");
        let SetExpr::Select(select) = q.body.as_ref() else {
            unreachable!()
        };
        let e = check_from_item(&select.from[0].relation).expect_err("a table function");
        assert!(e.starts_with("table functions are not allowed"), "{e}");
    }

    #[test]
    fn paging_applies_where_the_sql_has_none() {
        let mut q = query("select a from t");
        apply_paging(&mut q, Some(5), Some(10));
        assert_eq!(q.to_string(), "SELECT a FROM t LIMIT 10 OFFSET 5");
        let mut q = query("select a from t limit 3");
        apply_paging(&mut q, None, Some(10));
        assert_eq!(q.to_string(), "SELECT a FROM t LIMIT 3");
    }

    #[test]
    fn computed_columns_get_calcites_names_and_order_by_follows() {
        let mut q = query("select a, sum(b) from t group by a order by sum(b) desc");
        name_computed_columns(&mut q);
        assert_eq!(
            q.to_string(),
            "SELECT a, sum(b) AS \"EXPR$1\" FROM t GROUP BY a ORDER BY \"EXPR$1\" DESC"
        );
    }
}
