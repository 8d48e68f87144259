//! A first look at the client's text, before parsing: quoted names and string literals that
//! are refused on every engine.
//!
//! Spool never hands SQL text on (the engines run printed plans), but some spellings have no
//! business in a query and have been used to attack SQL front ends that print text back: a
//! quoted name holding a quote, a backslash or a control character (no project's table or
//! column needs one), a string literal whose printed form would not read back as the same
//! token (a backslash before a quote, quotes in a row), and literal kinds Kylin's SQL does not
//! have (escaped `E'..'`, dollar-quoted, raw, byte and triple-quoted strings). They are refused
//! with a message that says what to write instead.

use sqlparser::ast::Value;
use sqlparser::dialect::GenericDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

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

#[cfg(test)]
mod tests {
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
}
