//! Byte sizes as operators write them: `268435456`, `"256MiB"`, `"4 GiB"`, `"1.5G"`.

/// Reads a size: a whole number of bytes, or a number with a unit (`B`, `KiB`, `MiB`, `GiB`,
/// `TiB`, or `K`, `M`, `G`, `T` and `KB`, `MB`, `GB`, `TB`, all binary, as memory is counted;
/// case does not matter). The error says what was expected.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad(text)),
    };
    if number.is_empty() {
        return Err(bad(text));
    }
    let bytes = if number.contains('.') {
        let value: f64 = number.parse().map_err(|_| bad(text))?;
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(bad(text));
        }
        bytes.round() as u64
    } else {
        let value: u64 = number.parse().map_err(|_| bad(text))?;
        value
            .checked_shl(shift)
            .filter(|v| v >> shift == value)
            .ok_or_else(|| bad(text))?
    };
    Ok(bytes)
}

fn bad(text: &str) -> String {
    format!(
        "{text:?} is not a size: give bytes (268435456) or a number with a unit \
         (\"256MiB\", \"4GiB\", \"512M\")"
    )
}

/// A size for people: `256 MiB`, `4 GiB`, `1.5 GiB`, `512 B`.
pub fn show_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_and_without_units() {
        assert_eq!(parse_size("268435456"), Ok(268_435_456));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4 GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("64KB"), Ok(64 << 10));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        for text in [
            "",
            "MiB",
            "12 parsecs",
            "-5",
            "1.2.3G",
            "99999999999999999999",
            "20000000T",
        ] {
            let err = parse_size(text).expect_err(text);
            assert!(err.contains("is not a size"), "{text}: {err}");
        }
    }

    #[test]
    fn sizes_show_in_the_largest_whole_unit() {
        assert_eq!(show_size(256 << 20), "256 MiB");
        assert_eq!(show_size(4 << 30), "4 GiB");
        assert_eq!(show_size(3 << 29), "1.5 GiB");
        assert_eq!(show_size(512), "512 B");
    }
}
