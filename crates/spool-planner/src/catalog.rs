//! The catalog a query binds against: one project's schemas, tables and columns, as a snapshot.
//!
//! A project's tables live in schemas (Kylin's databases); unqualified names resolve in the
//! project's default schema. Name rules are Calcite's as Kylin configures it (`caseSensitive`
//! false): every name matches ignoring case, quoted or not; where two spellings match, the one
//! spelled as written wins (an unquoted name is written upper-case, as Calcite reads it). A
//! snapshot never changes: a query binds against one, and the engine executes the same one.

use std::collections::BTreeMap;

use crate::types::SqlType;

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name as the catalog spells it.
    pub name: String,
    /// Its SQL type.
    pub ty: SqlType,
    /// Whether it may hold NULL.
    pub nullable: bool,
}

impl Column {
    /// A nullable column.
    pub fn new(name: &str, ty: SqlType) -> Self {
        Self {
            name: name.to_owned(),
            ty,
            nullable: true,
        }
    }
}

/// A table (or view) of a project: where it lives and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The schema it belongs to, as the catalog spells it.
    pub schema: String,
    /// Its name as the catalog spells it.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<Column>,
    /// Its rows, where known (for planning).
    pub rows: Option<u64>,
}

/// A view of a project: a name for a query over the project's relations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The schema it belongs to, as the catalog spells it.
    pub schema: String,
    /// Its name as the catalog spells it.
    pub name: String,
    /// Its query, as written.
    pub sql: String,
}

/// What a relation name resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation<'c> {
    /// A table of data.
    Table(&'c Table),
    /// A view, bound where it is read.
    View(&'c View),
}

/// An entry of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Table(Table),
    View(View),
}

impl Entry {
    fn relation(&self) -> Relation<'_> {
        match self {
            Self::Table(t) => Relation::Table(t),
            Self::View(v) => Relation::View(v),
        }
    }
}

/// How a name was written. Both match ignoring case; they differ in the spelling preferred
/// when several match: Calcite reads an unquoted name upper-cased, a quoted one as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Written without quotes.
    Unquoted,
    /// Written in quotes.
    Quoted,
}

impl Case {
    /// The spelling `written` stands for.
    pub fn spelled(self, written: &str) -> String {
        match self {
            Self::Unquoted => written.to_uppercase(),
            Self::Quoted => written.to_owned(),
        }
    }
}

/// Picks the one candidate `written` names: the only case-insensitive match, or among several
/// the one spelled exactly as `written` stands for. `Err` holds every match (none: not found).
pub fn resolve<'c, T>(
    written: &str,
    case: Case,
    candidates: impl IntoIterator<Item = (&'c str, T)>,
) -> Result<T, Vec<&'c str>> {
    let mut found: Vec<(&str, T)> = candidates
        .into_iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(written))
        .collect();
    if found.len() == 1 {
        return Ok(found.remove(0).1);
    }
    let spelled = case.spelled(written);
    let exact: Vec<usize> = (0..found.len())
        .filter(|&i| found[i].0 == spelled)
        .collect();
    match exact.as_slice() {
        [at] => Ok(found.swap_remove(*at).1),
        _ => Err(found.into_iter().map(|(name, _)| name).collect()),
    }
}

/// One project's catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// The project the catalog describes, as its user names it (for messages; may be empty).
    pub project: String,
    /// The schema unqualified table names resolve in.
    pub default_schema: String,
    /// Tables and views by schema, each schema's by name (as spelled).
    schemas: BTreeMap<String, BTreeMap<String, Entry>>,
}

/// Why a table reference did not resolve to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No such table (or schema).
    NotFound,
    /// Two tables match a name written without quotes (`t` and `T` in one schema).
    Ambiguous(Vec<String>),
}

impl Catalog {
    /// An empty catalog whose default schema is `default_schema`.
    pub fn new(default_schema: &str) -> Self {
        Self {
            project: String::new(),
            default_schema: default_schema.to_owned(),
            schemas: BTreeMap::new(),
        }
    }

    /// Adds `table` to its schema (replacing a relation of the same spelling).
    pub fn add(&mut self, table: Table) {
        self.schemas
            .entry(table.schema.clone())
            .or_default()
            .insert(table.name.clone(), Entry::Table(table));
    }

    /// Adds `view` to its schema (replacing a relation of the same spelling).
    pub fn add_view(&mut self, view: View) {
        self.schemas
            .entry(view.schema.clone())
            .or_default()
            .insert(view.name.clone(), Entry::View(view));
    }

    /// Every table, schema by schema.
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.schemas
            .values()
            .flat_map(BTreeMap::values)
            .filter_map(|entry| match entry {
                Entry::Table(t) => Some(t),
                Entry::View(_) => None,
            })
    }

    /// Resolves a relation reference: `[schema.]name`, each part with how it was written.
    pub fn relation(
        &self,
        schema: Option<(&str, Case)>,
        name: (&str, Case),
    ) -> Result<Relation<'_>, Lookup> {
        let entries = match schema {
            Some((written, case)) => resolve(
                written,
                case,
                self.schemas.iter().map(|(name, t)| (name.as_str(), t)),
            )
            .map_err(|found| lookup_error(found))?,
            None => self
                .schemas
                .get(&self.default_schema)
                .ok_or(Lookup::NotFound)?,
        };
        let (written, case) = name;
        resolve(
            written,
            case,
            entries.iter().map(|(name, e)| (name.as_str(), e)),
        )
        .map(Entry::relation)
        .map_err(|found| lookup_error(found))
    }

    /// Resolves a table reference (views are not tables).
    pub fn table(
        &self,
        schema: Option<(&str, Case)>,
        table: (&str, Case),
    ) -> Result<&Table, Lookup> {
        match self.relation(schema, table)? {
            Relation::Table(t) => Ok(t),
            Relation::View(_) => Err(Lookup::NotFound),
        }
    }
}

fn lookup_error(found: Vec<&str>) -> Lookup {
    if found.is_empty() {
        Lookup::NotFound
    } else {
        Lookup::Ambiguous(found.into_iter().map(str::to_owned).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let mut c = Catalog::new("SSB");
        for (schema, name) in [
            ("SSB", "LINEORDER"),
            ("SSB", "DATES"),
            ("EDW", "TEST_CAL_DT"),
        ] {
            c.add(Table {
                schema: schema.to_owned(),
                name: name.to_owned(),
                columns: vec![Column::new("K", SqlType::Integer)],
                rows: None,
            });
        }
        c
    }

    #[test]
    fn names_resolve_as_calcite_does_in_kylin() {
        let c = catalog();
        let found = |schema: Option<(&str, Case)>, table: (&str, Case)| {
            c.table(schema, table)
                .map(|t| format!("{}.{}", t.schema, t.name))
        };
        use Case::{Quoted, Unquoted};
        assert_eq!(
            found(None, ("lineorder", Unquoted)),
            Ok("SSB.LINEORDER".into())
        );
        assert_eq!(
            found(None, ("LINEORDER", Quoted)),
            Ok("SSB.LINEORDER".into())
        );
        // Kylin matches quoted names ignoring case too (Calcite's caseSensitive is false).
        assert_eq!(
            found(None, ("lineorder", Quoted)),
            Ok("SSB.LINEORDER".into())
        );
        // Another schema's table needs its schema.
        assert_eq!(
            found(None, ("test_cal_dt", Unquoted)),
            Err(Lookup::NotFound)
        );
        assert_eq!(
            found(Some(("edw", Unquoted)), ("test_cal_dt", Unquoted)),
            Ok("EDW.TEST_CAL_DT".into())
        );
        assert_eq!(
            found(Some(("EDW", Quoted)), ("TEST_CAL_DT", Quoted)),
            Ok("EDW.TEST_CAL_DT".into())
        );
        assert_eq!(
            found(Some(("nope", Quoted)), ("DATES", Quoted)),
            Err(Lookup::NotFound)
        );
    }

    #[test]
    fn of_two_spellings_the_one_written_wins_else_the_name_is_ambiguous() {
        let mut c = catalog();
        for name in ["Dates", "dates"] {
            c.add(Table {
                schema: "SSB".to_owned(),
                name: name.to_owned(),
                columns: Vec::new(),
                rows: None,
            });
        }
        let name = |written: &str, case| c.table(None, (written, case)).map(|t| t.name.as_str());
        // Unquoted reads as upper case: DATES.
        assert_eq!(name("dates", Case::Unquoted), Ok("DATES"));
        assert_eq!(name("Dates", Case::Quoted), Ok("Dates"));
        assert_eq!(name("dates", Case::Quoted), Ok("dates"));
        assert!(matches!(
            name("dAtes", Case::Quoted),
            Err(Lookup::Ambiguous(names)) if names.len() == 3
        ));
    }
}
