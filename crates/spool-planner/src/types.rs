//! Kylin's SQL types and the rules for the types of expressions over them.
//!
//! Kylin 5 parses with Calcite and executes on Spark, and its answers are Spark's: arithmetic
//! result types follow Spark SQL (`DecimalPrecision`, with `allowPrecisionLoss` on, Spark's
//! default), and so do implicit conversions where Kylin leaves them to Spark. Every rule here is
//! a pure function of its operand types, so the plan's `columnMetas` never come from reading a
//! result.

use std::fmt;

/// The largest decimal precision (Spark's and Kylin's).
pub const MAX_PRECISION: u8 = 38;
/// The smallest scale a decimal division or average keeps when precision must be cut.
const MIN_ADJUSTED_SCALE: u8 = 6;

/// A column's or an expression's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlType {
    /// The type of the `NULL` literal: converts to any other.
    Null,
    /// `BOOLEAN`.
    Boolean,
    /// 1-byte integer.
    TinyInt,
    /// 2-byte integer.
    SmallInt,
    /// 4-byte integer.
    Integer,
    /// 8-byte integer.
    BigInt,
    /// `DECIMAL(precision, scale)`, `scale <= precision <= 38`.
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// 4-byte floating point (`FLOAT`, `REAL`).
    Float,
    /// 8-byte floating point.
    Double,
    /// Character data of any length (`VARCHAR`, `CHAR`, `STRING`).
    Varchar,
    /// A calendar date.
    Date,
    /// A date and time of day without a time zone (Spark's `TIMESTAMP_NTZ` semantics).
    Timestamp,
}

impl fmt::Display for SqlType {
    /// The type's name as Kylin reports it in `columnMetas`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("NULL"),
            Self::Boolean => f.write_str("BOOLEAN"),
            Self::TinyInt => f.write_str("TINYINT"),
            Self::SmallInt => f.write_str("SMALLINT"),
            Self::Integer => f.write_str("INTEGER"),
            Self::BigInt => f.write_str("BIGINT"),
            Self::Decimal { precision, scale } => write!(f, "DECIMAL({precision},{scale})"),
            Self::Float => f.write_str("FLOAT"),
            Self::Double => f.write_str("DOUBLE"),
            Self::Varchar => f.write_str("VARCHAR"),
            Self::Date => f.write_str("DATE"),
            Self::Timestamp => f.write_str("TIMESTAMP"),
        }
    }
}

impl SqlType {
    /// A decimal type, with precision and scale checked.
    pub fn decimal(precision: u8, scale: u8) -> Option<Self> {
        ((1..=MAX_PRECISION).contains(&precision) && scale <= precision)
            .then_some(Self::Decimal { precision, scale })
    }

    /// Whether values of this type are numbers.
    pub fn is_numeric(self) -> bool {
        self.is_integer() || matches!(self, Self::Decimal { .. } | Self::Float | Self::Double)
    }

    /// Whether this is one of the integer types.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            Self::TinyInt | Self::SmallInt | Self::Integer | Self::BigInt
        )
    }

    /// Whether this is a date or timestamp.
    pub fn is_temporal(self) -> bool {
        matches!(self, Self::Date | Self::Timestamp)
    }

    /// The exact decimal that holds every value of an integer or decimal type (Spark's
    /// `DecimalType.forType`): TINYINT as DECIMAL(3,0), ..., BIGINT as DECIMAL(20,0).
    pub fn as_decimal(self) -> Option<(u8, u8)> {
        match self {
            Self::TinyInt => Some((3, 0)),
            Self::SmallInt => Some((5, 0)),
            Self::Integer => Some((10, 0)),
            Self::BigInt => Some((20, 0)),
            Self::Decimal { precision, scale } => Some((precision, scale)),
            _ => None,
        }
    }

    /// The rank of a numeric type in Spark's widening order.
    fn numeric_rank(self) -> Option<u8> {
        match self {
            Self::TinyInt => Some(1),
            Self::SmallInt => Some(2),
            Self::Integer => Some(3),
            Self::BigInt => Some(4),
            Self::Decimal { .. } => Some(5),
            Self::Float => Some(6),
            Self::Double => Some(7),
            _ => None,
        }
    }
}

/// A decimal of `precision` and `scale` that may exceed 38 digits, cut to 38 as Spark does
/// with `allowPrecisionLoss`: the integer digits are kept, and the scale gives way down to 6
/// (or the scale asked for, if less).
fn bounded_decimal(precision: u32, scale: u32) -> SqlType {
    let max = u32::from(MAX_PRECISION);
    if precision <= max {
        return SqlType::Decimal {
            precision: precision as u8,
            scale: scale as u8,
        };
    }
    let integer_digits = precision - scale;
    let min_scale = scale.min(u32::from(MIN_ADJUSTED_SCALE));
    let scale = max.saturating_sub(integer_digits).max(min_scale);
    SqlType::Decimal {
        precision: MAX_PRECISION,
        scale: scale as u8,
    }
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arithmetic {
    /// `+`.
    Add,
    /// `-`.
    Subtract,
    /// `*`.
    Multiply,
    /// `/`.
    Divide,
    /// `%`, `MOD`.
    Modulo,
}

/// The result type of `left <op> right`, or `None` if the operands are not numbers. Integer
/// and decimal operands meet as decimals (an integer as the decimal that holds it) unless
/// both are integers; a floating-point operand makes the result DOUBLE; `/` of two integers
/// is Kylin's integer division, of decimals an exact decimal with Spark's precision and scale.
pub fn arithmetic(op: Arithmetic, left: SqlType, right: SqlType) -> Option<SqlType> {
    use SqlType::{Double, Float, Integer, Null};
    let (left, right) = match (left, right) {
        (Null, Null) => (Integer, Integer),
        (Null, other) | (other, Null) => (other, other),
        pair => pair,
    };
    if !left.is_numeric() || !right.is_numeric() {
        return None;
    }
    if matches!(left, Float | Double) || matches!(right, Float | Double) {
        return Some(Double);
    }
    if left.is_integer() && right.is_integer() {
        // The wider of the two. Kylin types `INT / INT` as Calcite does (INTEGER) and prints
        // Spark's double quotient truncated: integer division towards zero (`7 / 2` is 3).
        let wider = if left.numeric_rank() >= right.numeric_rank() {
            left
        } else {
            right
        };
        return Some(wider);
    }
    let (p1, s1) = left.as_decimal()?;
    let (p2, s2) = right.as_decimal()?;
    let (p1, s1, p2, s2) = (u32::from(p1), u32::from(s1), u32::from(p2), u32::from(s2));
    Some(match op {
        Arithmetic::Add | Arithmetic::Subtract => {
            let scale = s1.max(s2);
            bounded_decimal((p1 - s1).max(p2 - s2) + scale + 1, scale)
        }
        Arithmetic::Multiply => bounded_decimal(p1 + p2 + 1, s1 + s2),
        Arithmetic::Divide => {
            let scale = u32::from(MIN_ADJUSTED_SCALE).max(s1 + p2 + 1);
            bounded_decimal(p1 - s1 + s2 + scale, scale)
        }
        Arithmetic::Modulo => {
            let scale = s1.max(s2);
            bounded_decimal((p1 - s1).min(p2 - s2) + scale, scale)
        }
    })
}

/// The type `SUM` returns over `input`: BIGINT for integers, DECIMAL(p + 10, s) for decimals,
/// DOUBLE for floating point (Spark's `Sum`).
pub fn sum_type(input: SqlType) -> Option<SqlType> {
    match input {
        t if t.is_integer() => Some(SqlType::BigInt),
        SqlType::Null => Some(SqlType::Double),
        SqlType::Decimal { precision, scale } => Some(bounded_decimal(
            (u32::from(precision) + 10).min(u32::from(MAX_PRECISION)),
            u32::from(scale),
        )),
        SqlType::Float | SqlType::Double => Some(SqlType::Double),
        _ => None,
    }
}

/// The type `AVG` returns over `input`: DOUBLE for integers and floating point,
/// DECIMAL(p + 4, s + 4) for decimals (Spark's `Average`, bounded as a division's result).
pub fn avg_type(input: SqlType) -> Option<SqlType> {
    match input {
        SqlType::Decimal { precision, scale } => Some(bounded_decimal(
            u32::from(precision) + 4,
            u32::from(scale) + 4,
        )),
        t if t.is_numeric() => Some(SqlType::Double),
        SqlType::Null => Some(SqlType::Double),
        _ => None,
    }
}

/// The type two values meet as when compared, unioned, or offered as the branches of a CASE
/// (Spark's `findWiderTypeForTwo`, with Kylin's string rules): equal types stay; numbers widen
/// (an integer and a decimal meet as a decimal that holds both; anything with a float as
/// DOUBLE); DATE and TIMESTAMP meet as TIMESTAMP; a string meets a number as DOUBLE and a date
/// or timestamp as that type (the string is converted); NULL meets anything as it.
pub fn common_type(left: SqlType, right: SqlType) -> Option<SqlType> {
    use SqlType::{Boolean, Date, Double, Float, Null, Timestamp, Varchar};
    if left == right {
        return Some(left);
    }
    match (left, right) {
        (Null, other) | (other, Null) => Some(other),
        (Date, Timestamp) | (Timestamp, Date) => Some(Timestamp),
        (Varchar, t) | (t, Varchar) if t.is_temporal() => Some(t),
        (Varchar, Boolean) | (Boolean, Varchar) => Some(Boolean),
        (Varchar, t) | (t, Varchar) if t.is_numeric() => Some(match t {
            SqlType::Decimal { .. } => t,
            t if t.is_integer() => SqlType::BigInt,
            _ => Double,
        }),
        (a, b) if a.is_numeric() && b.is_numeric() => {
            if matches!(a, Float | Double) || matches!(b, Float | Double) {
                return Some(Double);
            }
            if a.is_integer() && b.is_integer() {
                return Some(if a.numeric_rank() >= b.numeric_rank() {
                    a
                } else {
                    b
                });
            }
            let (p1, s1) = a.as_decimal()?;
            let (p2, s2) = b.as_decimal()?;
            let scale = u32::from(s1.max(s2));
            let integer_digits = u32::from(p1 - s1).max(u32::from(p2 - s2));
            Some(bounded_decimal(integer_digits + scale, scale))
        }
        _ => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A date as `yyyy-MM-dd`.
pub fn format_date(days: i32) -> String {
    let (year, month, day) = civil_from_days(i64::from(days));
    format!("{year:04}-{month:02}-{day:02}")
}

/// A timestamp (microseconds since 1970-01-01 00:00:00) as `yyyy-MM-dd HH:mm:ss.ffffff`.
pub fn format_timestamp(micros: i64) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let within = micros.rem_euclid(86_400_000_000);
    let (year, month, day) = civil_from_days(days);
    let seconds = within / 1_000_000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        within % 1_000_000
    )
}

/// `yyyy-MM-dd`, with the day checked against its month.
pub fn parse_date(text: &str) -> Option<i32> {
    let mut parts = text.trim().splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month {
        return None;
    }
    i32::try_from(days_from_civil(year, month, day)).ok()
}

/// `yyyy-MM-dd[ HH:mm:ss[.fraction]]` (a `T` may stand for the space) in microseconds.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let days = i64::from(parse_date(date)?);
    let mut micros = 0i64;
    if let Some(time) = time {
        let (hms, fraction) = match time.split_once('.') {
            Some((hms, f)) => (hms, Some(f)),
            None => (time, None),
        };
        let mut parts = hms.split(':');
        let h: i64 = parts.next()?.parse().ok()?;
        let m: i64 = parts.next()?.parse().ok()?;
        let s: i64 = parts.next().map_or(Some(0), |s| s.parse().ok())?;
        if parts.next().is_some() || h > 23 || m > 59 || s > 59 {
            return None;
        }
        micros = ((h * 60 + m) * 60 + s) * 1_000_000;
        if let Some(f) = fraction {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let padded = format!("{f:0<6}");
            micros += padded[..6].parse::<i64>().ok()?;
        }
    }
    Some(days * 86_400_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(precision: u8, scale: u8) -> SqlType {
        SqlType::decimal(precision, scale).expect("valid decimal")
    }

    #[test]
    fn decimal_arithmetic_follows_spark() {
        use Arithmetic::*;
        // sum(price) / sum(qty) with DECIMAL(15,2) columns summed to DECIMAL(25,2): Spark
        // answers DECIMAL(38,13), so 1499.7312 is not rounded to the operands' two places.
        assert_eq!(
            arithmetic(Divide, dec(25, 2), dec(25, 2)),
            Some(dec(38, 13))
        );
        assert_eq!(
            arithmetic(Divide, dec(15, 2), dec(15, 2)),
            Some(dec(33, 18))
        );
        assert_eq!(arithmetic(Divide, dec(5, 2), dec(3, 1)), Some(dec(10, 6)));
        assert_eq!(
            arithmetic(Multiply, dec(15, 2), dec(15, 2)),
            Some(dec(31, 4))
        );
        assert_eq!(arithmetic(Add, dec(15, 2), dec(10, 4)), Some(dec(18, 4)));
        assert_eq!(arithmetic(Add, dec(38, 10), dec(38, 10)), Some(dec(38, 9)));
        // An integer meets a decimal as the decimal that holds it.
        assert_eq!(
            arithmetic(Multiply, SqlType::Integer, dec(15, 2)),
            Some(dec(26, 2))
        );
        // Integers divide as Kylin answers: an integer (truncated).
        assert_eq!(
            arithmetic(Divide, SqlType::Integer, SqlType::SmallInt),
            Some(SqlType::Integer)
        );
        assert_eq!(
            arithmetic(Add, SqlType::Integer, SqlType::BigInt),
            Some(SqlType::BigInt)
        );
        assert_eq!(
            arithmetic(Multiply, dec(15, 2), SqlType::Double),
            Some(SqlType::Double)
        );
        assert_eq!(arithmetic(Add, SqlType::Varchar, SqlType::Integer), None);
    }

    #[test]
    fn aggregates_widen_as_spark_does() {
        assert_eq!(sum_type(SqlType::Integer), Some(SqlType::BigInt));
        assert_eq!(sum_type(dec(15, 2)), Some(dec(25, 2)));
        assert_eq!(sum_type(dec(35, 2)), Some(dec(38, 2)));
        assert_eq!(avg_type(dec(15, 2)), Some(dec(19, 6)));
        assert_eq!(avg_type(dec(38, 2)), Some(dec(38, 6)));
        assert_eq!(avg_type(SqlType::BigInt), Some(SqlType::Double));
        assert_eq!(sum_type(SqlType::Varchar), None);
    }

    #[test]
    fn values_meet_in_a_common_type() {
        assert_eq!(common_type(SqlType::Integer, dec(15, 2)), Some(dec(15, 2)));
        assert_eq!(common_type(dec(5, 4), dec(10, 0)), Some(dec(14, 4)));
        assert_eq!(
            common_type(SqlType::Varchar, SqlType::Date),
            Some(SqlType::Date)
        );
        assert_eq!(
            common_type(SqlType::Date, SqlType::Timestamp),
            Some(SqlType::Timestamp)
        );
        assert_eq!(
            common_type(SqlType::Null, SqlType::Varchar),
            Some(SqlType::Varchar)
        );
        assert_eq!(common_type(SqlType::Boolean, SqlType::Date), None);
        assert_eq!(SqlType::decimal(39, 0), None);
        assert_eq!(dec(15, 2).to_string(), "DECIMAL(15,2)");
    }
}
