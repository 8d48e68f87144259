//! Spool's SQL front end, engine-free: Kylin's SQL (Calcite's dialect with Kylin's semantics)
//! is parsed, bound against one project's [`Catalog`] snapshot into a typed logical [`Plan`],
//! and handed to each engine's lowering.
//!
//! - [`types`]: Kylin's types and the result types of expressions over them (Spark's decimal
//!   rules, Kylin's integer division, `SUM`/`AVG` widening);
//! - [`catalog`]: a project's schemas, tables and columns, and Calcite's name rules as Kylin
//!   configures them;
//! - [`plan`]: the logical plan, expressions by position, every type known;
//! - `bind`: the AST to the plan (names, aliases, grouping, ORDER BY over output names);
//! - [`passes`]: rewrites that keep the answer (comma joins to inner joins on the WHERE's
//!   equalities; the star-join levers: key filters on the fact table and join order, with
//!   facts the engine gives through [`passes::Statistics`]).
//!
//! The Polars engine lowers the plan to Polars' LazyFrame API (`sql_front_end = "spool"`);
//! what it covers so far is in `docs/SQL.md`.

mod bind;
pub mod catalog;
mod error;
pub mod passes;
pub mod plan;
pub mod tokens;
pub mod types;

pub use catalog::{Case, Catalog, Column, Relation, Table, View};
pub use error::{PlanError, Position};
pub use plan::{Expr, Field, Plan};
pub use types::SqlType;

use sqlparser::ast::Statement;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// Parses `sql` (one read-only query from a client, in Kylin's dialect; its text checked by
/// [`tokens::check_tokens`]), binds it against `catalog` and runs the passes over it.
pub fn plan_query(sql: &str, catalog: &Catalog) -> Result<Plan, PlanError> {
    client_text(sql)?;
    bind_query(sql, catalog).map(passes::optimize)
}

fn client_text(sql: &str) -> Result<(), PlanError> {
    tokens::check_tokens(sql).map_err(|message| PlanError::user(message, Position::default()))
}

/// Parses `sql`, binds it against `catalog` and runs the passes over it with the levers
/// `options` allows, asking `statistics` for the facts they need.
pub fn plan_query_with(
    sql: &str,
    catalog: &Catalog,
    options: passes::PlannerOptions,
    statistics: &dyn passes::Statistics,
) -> Result<Plan, PlanError> {
    client_text(sql)?;
    bind_query(sql, catalog).map(|plan| passes::optimize_with(plan, options, statistics))
}

/// Parses `sql` and binds it against `catalog`, without passes (a view's text, written by the
/// project's owner, is bound this way).
pub fn bind_query(sql: &str, catalog: &Catalog) -> Result<Plan, PlanError> {
    let mut statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| {
        let message = e.to_string();
        let message = message
            .strip_prefix("sql parser error: ")
            .unwrap_or(&message);
        PlanError::user(format!("SQL syntax error: {message}"), Position::default())
    })?;
    let statement = match statements.len() {
        1 => statements.remove(0),
        0 => {
            return Err(PlanError::user(
                "the SQL text holds no statement",
                Position::default(),
            ));
        }
        n => {
            return Err(PlanError::user(
                format!("only one statement may be sent at a time; found {n}"),
                Position::default(),
            ));
        }
    };
    let Statement::Query(query) = &statement else {
        return Err(PlanError::user(
            "only read-only queries (SELECT, WITH, VALUES) may run",
            Position::default(),
        ));
    };
    bind::Binder::new(catalog).query(query)
}

#[cfg(test)]
mod tests;
