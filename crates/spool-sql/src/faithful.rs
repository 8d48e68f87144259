//! What an engine runs is exactly what was checked.
//!
//! Engines are handed SQL *text* printed from a checked AST: Polars' SQL front end parses it
//! again (with this same sqlparser, [`parse_as_polars`]), Spark with its own parser. sqlparser's
//! printer is not an exact inverse of its parser: it leaves a quote that follows a backslash
//! undoubled (taking it as escaped already), and two quotes in a row as they are, while the
//! generic dialect reads a backslash as an ordinary character. A name or string written to
//! exploit that prints as text in which the quoted part ends early, and what follows it is SQL
//! that no check saw. So, before and after the checks:
//! - [`check_tokens`] refuses, on the client's text, a quoted name holding a quote, a backslash
//!   or a control character, a string literal whose printed form does not read back as the same
//!   single token, and the literal kinds Spool does not pass on (escaped `E'..'`, dollar-quoted,
//!   raw, byte and triple-quoted strings);
//! - [`print_verified`] prints a statement, parses the text exactly as Polars will, and refuses
//!   unless the two ASTs are equal, so the text handed on means what was checked;
//! - [`check_relations`] is the last gate before an engine runs text: on what the engine's own
//!   parser reads, every relation is one the caller allows (or a CTE of the text) and no FROM
//!   item is a table function.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{ObjectNamePart, Statement, Value, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError, ParserOptions};
use sqlparser::tokenizer::{Token, Tokenizer};

/// Parses `text` exactly as Polars' SQL front end does (`polars_sql::SQLContext::execute`:
/// the generic dialect with trailing commas allowed).
pub fn parse_as_polars(text: &str) -> Result<Vec<Statement>, ParserError> {
    Parser::new(&GenericDialect {})
        .with_options(ParserOptions {
            trailing_commas: true,
            ..ParserOptions::default()
        })
        .try_with_sql(text)?
        .parse_statements()
}

/// Characters a quoted name may not hold: they are what makes a printed name end early (or,
/// on Spark, escape), and no table or column of a project needs them.
fn forbidden_in_name(c: char) -> bool {
    matches!(c, '"' | '`' | '\'' | '\\') || c.is_control()
}

/// A short, printable excerpt of `text` for a message.
fn excerpt(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 40 {
        shown.push_str("...");
    }
    shown
}

/// Refuses quoted names and string literals that cannot be passed on to an engine unchanged
/// (see the module docs). The message is for the user who wrote `sql`.
pub fn check_tokens(sql: &str) -> Result<(), String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| format!("SQL syntax error: {e}"))?;
    for token in &tokens {
        match token {
            Token::Word(word)
                if word.quote_style.is_some() && word.value.chars().any(forbidden_in_name) =>
            {
                return Err(format!(
                    "the quoted name {} holds a quote, a backslash or a control character; \
                     such names are not supported",
                    excerpt(&word.value)
                ));
            }
            Token::SingleQuotedString(value) => {
                check_literal(token, &Value::SingleQuotedString(value.clone()))?;
            }
            Token::NationalStringLiteral(value) => {
                check_literal(token, &Value::NationalStringLiteral(value.clone()))?;
            }
            Token::HexStringLiteral(value) => {
                check_literal(token, &Value::HexStringLiteral(value.clone()))?;
            }
            Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_) => {
                return Err(format!(
                    "this kind of string literal is not supported: {}; write strings in single \
                     quotes, with a quote inside doubled ('it''s')",
                    excerpt(&token.to_string())
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a literal whose printed form does not tokenize back to exactly `token`.
fn check_literal(token: &Token, value: &Value) -> Result<(), String> {
    let printed = value.to_string();
    let again = Tokenizer::new(&GenericDialect {}, &printed).tokenize();
    match again.as_deref() {
        Ok([same]) if same == token => Ok(()),
        _ => Err(format!(
            "the string literal {} cannot be passed on unchanged (a backslash before a quote, \
             or two quotes in a row inside it); write the quote with chr(39) instead",
            excerpt(&printed)
        )),
    }
}

/// Why a statement could not be printed faithfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfaithful {
    /// The printed text, shortened, for the log.
    pub printed: String,
    /// What went wrong: the text does not parse, or parses to another statement.
    pub reason: String,
}

impl std::fmt::Display for Unfaithful {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (printed as: {})", self.reason, self.printed)
    }
}

/// Prints `statement` and returns the text only if Polars' parser reads it back as the same
/// statement (sqlparser's equality ignores source positions).
pub fn print_verified(statement: &Statement) -> Result<String, Unfaithful> {
    let text = statement.to_string();
    let unfaithful = |reason: String| Unfaithful {
        printed: excerpt_long(&text),
        reason,
    };
    let mut again = parse_as_polars(&text)
        .map_err(|e| unfaithful(format!("the printed statement does not parse: {e}")))?;
    match again.len() {
        1 if again.remove(0) == *statement => Ok(text),
        1 => Err(unfaithful(
            "the printed statement parses to a different statement".to_owned(),
        )),
        n => Err(unfaithful(format!(
            "the printed statement parses as {n} statements"
        ))),
    }
}

fn excerpt_long(text: &str) -> String {
    let mut shown: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        shown.push_str("...");
    }
    shown
}

/// The last gate before an engine runs `text`: parsed exactly as Polars parses it, it must be
/// one read-only query whose FROM items are tables, subqueries or joins (no table functions)
/// and whose every relation is a CTE the text defines or a name `allowed` accepts.
pub fn check_relations(text: &str, allowed: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let statements = parse_as_polars(text).map_err(|e| format!("does not parse: {e}"))?;
    let [statement @ Statement::Query(_)] = statements.as_slice() else {
        return Err("is not exactly one query".to_owned());
    };
    let mut ctes = CteNames::default();
    let _ = statement.visit(&mut ctes);
    let mut gate = Gate {
        ctes: ctes.0,
        allowed,
        error: None,
    };
    let _ = statement.visit(&mut gate);
    gate.error.map_or(Ok(()), Err)
}

/// Every CTE name defined anywhere in a statement, lowercase.
#[derive(Default)]
struct CteNames(HashSet<String>);

impl Visitor for CteNames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> ControlFlow<()> {
        self.0.extend(crate::cte_names(query));
        ControlFlow::Continue(())
    }
}

struct Gate<'a> {
    ctes: HashSet<String>,
    allowed: &'a dyn Fn(&str) -> bool,
    error: Option<String>,
}

impl Visitor for Gate<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> ControlFlow<()> {
        match crate::check_body(&query.body) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &sqlparser::ast::TableFactor) -> ControlFlow<()> {
        match crate::check_from_item(factor) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    fn pre_visit_relation(&mut self, relation: &sqlparser::ast::ObjectName) -> ControlFlow<()> {
        let name = match relation.0.as_slice() {
            [ObjectNamePart::Identifier(ident)] => Some(ident),
            _ => None,
        };
        let known = name.is_some_and(|ident| {
            self.ctes.contains(&ident.value.to_lowercase()) || (self.allowed)(&ident.value)
        });
        if known {
            ControlFlow::Continue(())
        } else {
            self.error = Some(format!("reads relation {relation}, which it may not"));
            ControlFlow::Break(())
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlparser::ast::{Expr, Ident, SelectItem, SetExpr};

    use super::*;

    /// The attack of issue 28 and its variants: quoted names and literals whose printed form
    /// closes early. Each is refused before anything else looks at it.
    #[test]
    fn names_and_literals_that_would_print_unfaithfully_are_refused() {
        for sql in [
            r#"select 1 as "x\"" , k from read_csv('/etc/passwd') --""#,
            r#"select 1 as `x\`` , k from read_csv('/etc/passwd') --`"#,
            r#"select * from t as "a\"" , read_csv('/etc/passwd') --""#,
            r#"select * from (select 1) as "s\"" , read_csv('/etc/passwd') --""#,
            r#"select "a""b" from t"#,
            "select \"a\nb\" from t",
        ] {
            let e = check_tokens(sql).expect_err(sql);
            assert!(e.contains("quoted name"), "{sql}: {e}");
        }
        for sql in [
            r"select 'x\''' union select * from read_csv('/etc/passwd') --' from t",
            "select 'a'''''",
        ] {
            let e = check_tokens(sql).expect_err(sql);
            assert!(e.contains("cannot be passed on unchanged"), "{sql}: {e}");
        }
        for sql in [
            "select E'\\x41'",
            "select $$a$$",
            "select X'4' || N'n' || B'01'",
        ] {
            assert!(check_tokens(sql).is_err(), "{sql}");
        }
        for sql in [
            "select 'it''s', \"LO_REVENUE\", `d_year`, N'n', X'41' from t",
            r"select 'a\b' like 'c\%' from t",
            "select 'line\none' from t",
        ] {
            check_tokens(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    /// An alias built by hand with the attack's value: printed, it reads back otherwise, and
    /// [`print_verified`] says so instead of handing the text on.
    #[test]
    fn a_statement_that_reads_back_otherwise_is_not_handed_on() {
        let mut statement = crate::parse_query("select 1 from t").expect("query");
        let Statement::Query(query) = &mut statement else {
            unreachable!()
        };
        let SetExpr::Select(select) = query.body.as_mut() else {
            unreachable!()
        };
        select.projection[0] = SelectItem::ExprWithAlias {
            expr: Expr::value(Value::Number("1".to_owned(), false)),
            alias: Ident::with_quote('"', "x\\\" , k from read_csv('/etc/passwd') --"),
        };
        let e = print_verified(&statement).expect_err("unfaithful");
        assert!(e.reason.contains("different statement"), "{e}");
        let plain = crate::parse_query("select 'it''s' as \"A\" from t").expect("query");
        assert_eq!(
            print_verified(&plain).expect("faithful"),
            "SELECT 'it''s' AS \"A\" FROM t"
        );
    }

    #[test]
    fn the_last_gate_sees_only_allowed_relations_and_ctes() {
        let allowed = |name: &str| name == "LINEORDER";
        for ok in [
            r#"select * from "LINEORDER""#,
            r#"with x as (select 1) select * from x, "LINEORDER""#,
            r#"select * from (select * from "LINEORDER") as "LINEORDER2""#,
        ] {
            check_relations(ok, &allowed).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for refused in [
            "select * from lineorder",
            "select * from read_csv('/etc/passwd')",
            r#"select * from "LINEORDER" where 1 in (select 1 from other)"#,
            r#"select * from ssb."LINEORDER""#,
            "select 1; select 2",
            "drop table x",
            r#"select * from "LINEORDER" union all table other"#,
        ] {
            assert!(check_relations(refused, &allowed).is_err(), "{refused}");
        }
    }

    /// The one-part relation names a statement reads.
    #[derive(Default)]
    struct Relations(HashSet<String>);

    impl Visitor for Relations {
        type Break = ();

        fn pre_visit_relation(&mut self, relation: &sqlparser::ast::ObjectName) -> ControlFlow<()> {
            if let [ObjectNamePart::Identifier(ident)] = relation.0.as_slice() {
                self.0.insert(ident.value.clone());
            }
            ControlFlow::Continue(())
        }
    }

    /// A small, seeded generator (no dependency): the same cases every run.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn text(&mut self) -> String {
            const PIECES: &[&str] = &[
                "\"",
                "'",
                "`",
                "\\",
                "\\'",
                "\\\"",
                "''",
                "\"\"",
                "a",
                "Z",
                " ",
                ",",
                "--",
                "/*",
                "*/",
                ";",
                "\n",
                "\t",
                "\u{0}",
                "\u{7}",
                "é",
                "read_csv('/etc/passwd')",
                " from ",
                ")",
                "(",
                "$$",
                "x",
            ];
            let len = self.next() % 8;
            (0..len)
                .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
                .collect()
        }
    }

    /// Differential fuzzing: random names and literals with quotes, backslashes and control
    /// characters, through check → print → parse as Polars does. Whatever is accepted reads
    /// back as the statement that was checked, and names no relation but `t`.
    #[test]
    fn whatever_is_accepted_reads_back_as_the_checked_statement() {
        let mut random = Lcg(0x5eed_2026);
        let mut accepted = 0;
        for case in 0..20_000 {
            let (a, b) = (random.text(), random.text());
            let sql = match case % 6 {
                0 => format!("select 1 as \"{a}\", k from t"),
                1 => format!("select `{a}` from t"),
                2 => format!("select * from t as \"{a}\""),
                3 => format!("select * from (select 1 from t) as `{a}`"),
                4 => format!("select '{a}', k from t where v = '{b}'"),
                _ => format!("select k from t where \"{a}\" in (select '{b}' from t)"),
            };
            let checked = check_tokens(&sql).and_then(|()| crate::parse_query(&sql));
            let Ok(statement) = checked else { continue };
            let Ok(text) = print_verified(&statement) else {
                continue;
            };
            accepted += 1;
            let again = Parser::new(&GenericDialect {})
                .with_options(ParserOptions {
                    trailing_commas: true,
                    ..ParserOptions::default()
                })
                .try_with_sql(&text)
                .and_then(|mut p| p.parse_statements())
                .unwrap_or_else(|e| panic!("{sql} printed as {text}: {e}"));
            assert_eq!(
                again,
                std::slice::from_ref(&statement),
                "{sql} printed as {text}"
            );
            // The text names no relation the checked statement did not (the generator's own
            // quoting is naive, so a case may name others, but then it was checked so).
            let mut named = Relations::default();
            let _ = statement.visit(&mut named);
            check_relations(&text, &|name| named.0.contains(name))
                .unwrap_or_else(|e| panic!("{sql} printed as {text}: {e}"));
        }
        // The generator makes plain names and literals too: most cases are accepted.
        assert!(accepted > 3_000, "only {accepted} cases were accepted");
    }

    /// Built by hand, so no parser had a say: every value the generator makes, as an alias and
    /// as a literal, is either refused by [`print_verified`] or reads back as itself.
    #[test]
    fn hand_built_names_and_literals_are_printed_faithfully_or_refused() {
        let mut random = Lcg(0xfeed_beef);
        for _ in 0..20_000 {
            let value = random.text();
            let mut statement = crate::parse_query("select 1 from t").expect("query");
            let Statement::Query(query) = &mut statement else {
                unreachable!()
            };
            let SetExpr::Select(select) = query.body.as_mut() else {
                unreachable!()
            };
            let quote = if random.next().is_multiple_of(2) {
                '"'
            } else {
                '`'
            };
            select.projection[0] = SelectItem::ExprWithAlias {
                expr: Expr::value(Value::SingleQuotedString(value.clone())),
                alias: Ident::with_quote(quote, value.clone()),
            };
            if let Ok(text) = print_verified(&statement) {
                let again = parse_as_polars(&text).expect("parses");
                let Statement::Query(q) = &again[0] else {
                    panic!("{text}")
                };
                let SetExpr::Select(s) = q.body.as_ref() else {
                    panic!("{text}")
                };
                let SelectItem::ExprWithAlias { expr, alias } = &s.projection[0] else {
                    panic!("{text}")
                };
                assert_eq!(alias.value, value, "{text}");
                assert_eq!(
                    expr,
                    &Expr::value(Value::SingleQuotedString(value.clone())),
                    "{text}"
                );
                assert_eq!(s.from.len(), 1, "{text}");
            }
        }
    }
}
