//! Polars data types as the SQL type names Kylin reports in result metadata.

use polars::prelude::DataType;

/// Returns the Kylin SQL type name of a Polars column type.
///
/// Unsigned integers widen to the next signed type that holds all their values (`count(*)` is
/// a `UInt32` in Polars and a `BIGINT` in Kylin); types SQL has no name for are `VARCHAR`, the
/// form they take in a CSV export.
pub fn sql_type(dtype: &DataType) -> String {
    match dtype {
        DataType::Boolean => "BOOLEAN".to_owned(),
        DataType::Int8 => "TINYINT".to_owned(),
        DataType::Int16 | DataType::UInt8 => "SMALLINT".to_owned(),
        DataType::Int32 | DataType::UInt16 => "INTEGER".to_owned(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "BIGINT".to_owned(),
        DataType::Float32 => "FLOAT".to_owned(),
        DataType::Float64 => "DOUBLE".to_owned(),
        DataType::Decimal(precision, scale) => format!("DECIMAL({precision},{scale})"),
        DataType::String => "VARCHAR".to_owned(),
        DataType::Date => "DATE".to_owned(),
        DataType::Datetime(_, _) => "TIMESTAMP".to_owned(),
        DataType::Time => "TIME".to_owned(),
        DataType::Null => "NULL".to_owned(),
        _ => "VARCHAR".to_owned(),
    }
}

/// The Polars type a column of Kylin SQL type `name` is read back as (the inverse of
/// [`sql_type`] for the types it names; anything else is text).
pub fn dtype(name: &str) -> DataType {
    let upper = name.trim().to_ascii_uppercase();
    if let Some(args) = upper
        .strip_prefix("DECIMAL(")
        .and_then(|rest| rest.strip_suffix(')'))
        && let Some((p, s)) = args.split_once(',')
        && let (Ok(p), Ok(s)) = (p.trim().parse(), s.trim().parse())
    {
        return DataType::Decimal(p, s);
    }
    match upper.as_str() {
        "BOOLEAN" => DataType::Boolean,
        "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "FLOAT" => DataType::Float32,
        "DOUBLE" => DataType::Float64,
        "DATE" => DataType::Date,
        "TIMESTAMP" => DataType::Datetime(polars::prelude::TimeUnit::Microseconds, None),
        "TIME" => DataType::Time,
        _ => DataType::String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::TimeUnit;

    #[test]
    fn kylin_names() {
        for (dtype, name) in [
            (DataType::Int64, "BIGINT"),
            (DataType::Int32, "INTEGER"),
            (DataType::UInt32, "BIGINT"),
            (DataType::String, "VARCHAR"),
            (DataType::Float64, "DOUBLE"),
            (DataType::Decimal(15, 2), "DECIMAL(15,2)"),
            (DataType::Date, "DATE"),
            (
                DataType::Datetime(TimeUnit::Microseconds, None),
                "TIMESTAMP",
            ),
            (DataType::Boolean, "BOOLEAN"),
        ] {
            assert_eq!(sql_type(&dtype), name, "{dtype:?}");
        }
    }
}
