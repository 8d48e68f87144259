//! The DATES dimension: one row a day for 2,556 days from 1992-01-01.

/// Days in the DATES table.
pub const DAYS: usize = 2_556;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// Day names, Sunday first (SSB numbers the days of the week from Sunday = 1).
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A DATES row.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Date {
    pub datekey: i32,
    pub date: String,
    pub dayofweek: &'static str,
    pub month: &'static str,
    pub year: i32,
    pub yearmonthnum: i32,
    pub yearmonth: String,
    pub daynuminweek: i32,
    pub daynuminmonth: i32,
    pub daynuminyear: i32,
    pub monthnuminyear: i32,
    pub weeknuminyear: i32,
    pub sellingseason: &'static str,
    pub lastdayinweekfl: i32,
    pub lastdayinmonthfl: i32,
    pub holidayfl: i32,
    pub weekdayfl: i32,
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn month_len(year: i32, month: usize) -> i32 {
    const LEN: [i32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    LEN[month] + i32::from(month == 1 && is_leap(year))
}

/// Walks the calendar from 1992-01-01, calling `f(year, month0, day, day_of_year, weekday0)`.
fn walk(days: usize, mut f: impl FnMut(i32, usize, i32, i32, usize)) {
    let (mut year, mut month, mut day, mut yday) = (1992, 0usize, 1, 1);
    // 1992-01-01 was a Wednesday.
    let mut weekday = 3usize;
    for _ in 0..days {
        f(year, month, day, yday, weekday);
        weekday = (weekday + 1) % 7;
        day += 1;
        yday += 1;
        if day > month_len(year, month) {
            day = 1;
            month += 1;
            if month == 12 {
                month = 0;
                year += 1;
                yday = 1;
            }
        }
    }
}

/// Returns the yyyymmdd key of each of the first `days` days from 1992-01-01.
pub(crate) fn day_keys(days: usize) -> Vec<i32> {
    let mut keys = Vec::with_capacity(days);
    walk(days, |y, m, d, _, _| {
        keys.push(y * 10_000 + (m as i32 + 1) * 100 + d)
    });
    keys
}

/// Returns every DATES row.
pub fn dates() -> Vec<Date> {
    let mut rows = Vec::with_capacity(DAYS);
    walk(DAYS, |year, m, day, yday, weekday| {
        let month = MONTHS[m];
        let last_in_month = day == month_len(year, m);
        let season = match m {
            11 => "Christmas",
            0 | 1 => "Winter",
            2..=4 => "Spring",
            5..=7 => "Summer",
            _ => "Fall",
        };
        let holiday = matches!((m, day), (0, 1) | (6, 4) | (10, 11) | (11, 25) | (11, 31));
        rows.push(Date {
            datekey: year * 10_000 + (m as i32 + 1) * 100 + day,
            date: format!("{month} {day}, {year}"),
            dayofweek: WEEKDAYS[weekday],
            month,
            year,
            yearmonthnum: year * 100 + m as i32 + 1,
            yearmonth: format!("{}{year}", &month[..3]),
            daynuminweek: weekday as i32 + 1,
            daynuminmonth: day,
            daynuminyear: yday,
            monthnuminyear: m as i32 + 1,
            weeknuminyear: yday / 7 + 1,
            sellingseason: season,
            lastdayinweekfl: i32::from(weekday == 6),
            lastdayinmonthfl: i32::from(last_in_month),
            holidayfl: i32::from(holiday),
            weekdayfl: i32::from((1..=5).contains(&weekday)),
        });
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calendar_is_right() {
        let keys = day_keys(2_406);
        assert_eq!(keys[0], 19920101);
        assert_eq!(keys[59], 19920229);
        assert_eq!(keys[366], 19930101);
        assert_eq!(keys[2_405], 19980802);
        let rows = dates();
        assert_eq!(rows.len(), DAYS);
        assert_eq!(rows[0].date, "January 1, 1992");
        assert_eq!(rows[0].dayofweek, "Wednesday");
        assert_eq!(rows[0].daynuminweek, 4);
        let dec97 = rows.iter().find(|d| d.datekey == 19971225).expect("day");
        assert_eq!(dec97.yearmonth, "Dec1997");
        assert_eq!(dec97.dayofweek, "Thursday");
        assert_eq!(dec97.holidayfl, 1);
        assert_eq!(rows.last().map(|d| d.datekey), Some(19981230));
    }
}
