//! Timestamps in text results as Kylin prints them: `yyyy-MM-dd HH:mm:ss.SSS` with the
//! fraction's trailing zeros (and then a bare point) removed, so `2012-01-01 12:34:56`,
//! `2012-01-01 12:34:56.01`; digits below the millisecond are dropped (Kylin formats a
//! `java.sql.Timestamp` with `SimpleDateFormat`, `SparderTypeUtil` / `DateFormat`). Kylin's
//! Python client parses exactly this; Polars' writers print `1994-01-01T19:16:59.000000`.

use polars::prelude::{
    Column, DataFrame, DataType, IntoColumn, PolarsResult, StringChunked, TimeUnit,
};

/// Days since 1970-01-01 as (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A timestamp of `millis` since 1970-01-01 00:00:00 as Kylin prints it.
pub(crate) fn kylin_timestamp(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let in_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (secs, ms) = (in_day / 1_000, in_day % 1_000);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    );
    if ms > 0 {
        let fraction = format!("{ms:03}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text
}

/// `batch` with each timestamp column as text Kylin prints, or `None` when it has none.
pub(crate) fn as_kylin_text(batch: &DataFrame) -> PolarsResult<Option<DataFrame>> {
    if !batch
        .columns()
        .iter()
        .any(|c| matches!(c.dtype(), DataType::Datetime(..)))
    {
        return Ok(None);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            let DataType::Datetime(unit, _) = column.dtype() else {
                return Ok(column.clone());
            };
            let per_milli = match unit {
                TimeUnit::Nanoseconds => 1_000_000,
                TimeUnit::Microseconds => 1_000,
                TimeUnit::Milliseconds => 1,
            };
            let physical = column.to_physical_repr();
            let values = physical.i64()?;
            let text: StringChunked = values
                .iter()
                .map(|v| v.map(|v| kylin_timestamp(v.div_euclid(per_milli))))
                .collect();
            Ok(text.with_name(column.name().clone()).into_column())
        })
        .collect::<PolarsResult<Vec<Column>>>()?;
    DataFrame::new(batch.height(), columns).map(Some)
}

#[cfg(test)]
mod tests {
    use polars::prelude::NamedFrom;

    use super::*;

    #[test]
    fn timestamps_print_as_kylin_prints_them() {
        // 2012-01-01 12:34:56 UTC is 1,325,421,296 s after the epoch.
        let base = 1_325_421_296_000;
        for (millis, expected) in [
            (base, "2012-01-01 12:34:56"),
            (base + 10, "2012-01-01 12:34:56.01"),
            (base + 100, "2012-01-01 12:34:56.1"),
            (base + 123, "2012-01-01 12:34:56.123"),
            (0, "1970-01-01 00:00:00"),
            (-1, "1969-12-31 23:59:59.999"),
            // 2000-02-29, a leap day in a year divisible by 400.
            (951_782_400_000, "2000-02-29 00:00:00"),
        ] {
            assert_eq!(kylin_timestamp(millis), expected, "{millis}");
        }
    }

    #[test]
    fn json_prints_timestamps_as_the_csv_does() {
        let mut out = Vec::new();
        crate::json::json_value(
            &mut out,
            &polars::prelude::AnyValue::Datetime(
                1_325_421_296_010_000,
                TimeUnit::Microseconds,
                None,
            ),
        );
        assert_eq!(out, br#""2012-01-01 12:34:56.01""#);
    }

    #[test]
    fn only_timestamp_columns_change_and_digits_below_the_millisecond_are_dropped() {
        let micros =
            polars::prelude::Series::new("T".into(), [Some(1_325_421_296_000_101i64), None])
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .expect("timestamps");
        let batch = DataFrame::new(
            2,
            vec![Column::new("N".into(), [1i32, 2]), micros.into_column()],
        )
        .expect("frame");
        let text = as_kylin_text(&batch).expect("text").expect("changed");
        assert_eq!(text.column("N").expect("n").dtype(), &DataType::Int32);
        let t = text.column("T").expect("t").str().expect("text").clone();
        assert_eq!(t.get(0), Some("2012-01-01 12:34:56"));
        assert_eq!(t.get(1), None);
        let plain = DataFrame::new(1, vec![Column::new("N".into(), [1i32])]).expect("frame");
        assert!(as_kylin_text(&plain).expect("text").is_none());
    }
}
