//! Human durations as DAG files write them: `"30s"`, `"5m"`, `"1h30m"`, `"2d"`, `"250ms"`, or a
//! number of seconds.

use std::time::Duration;

/// A duration string that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}; write e.g. \"30s\", \"5m\", \"1h30m\", \"2d\" or a number of seconds")]
pub struct DurationError {
    pub input: String,
    pub reason: String,
}

/// Parses `"1h30m"`, `"45s"`, `"250ms"`, `"2d"`, `"1w"` or a plain number of seconds (`"90"`).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason: &str| DurationError {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(err("it must be a non-negative number of seconds"));
        }
        return Duration::try_from_secs_f64(secs).map_err(|_| err("it is too long"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("a number has no unit"))?;
        if num_len == 0 {
            return Err(err("expected a number before each unit"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| err("a number is malformed"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = rest[unit_len..].trim_start();
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" | "sec" | "secs" => value,
            "m" | "min" | "mins" => value * 60.0,
            "h" | "hr" | "hrs" => value * 3600.0,
            "d" | "day" | "days" => value * 86400.0,
            "w" => value * 7.0 * 86400.0,
            _ => {
                return Err(err(&format!(
                    "unknown unit {unit:?} (use ms, s, m, h, d or w)"
                )))
            }
        };
        total = Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| total.checked_add(d))
            .ok_or_else(|| err("it is too long"))?;
    }
    Ok(total)
}

/// Formats a duration compactly (`1h30m`, `45s`, `250ms`), the inverse of [`parse_duration`].
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// A duration as people read it on a page, to about three figures: `850ms`, `12.4s`,
/// `2m 5s`, `1h 2m`, `3d 4h` ([`format_duration`] is the exact form DAG files use).
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs < 59.95 {
        let text = format!("{secs:.1}");
        return format!("{}s", text.trim_end_matches(".0"));
    }
    let s = d.as_secs_f64().round() as u64;
    let (days, hours, minutes, seconds) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else {
        format!("{minutes}m {seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let ms = Duration::from_millis;
        for (d, text) in [
            (ms(0), "0ms"),
            (ms(850), "850ms"),
            (ms(1000), "1s"),
            (ms(1213), "1.2s"),
            (ms(59_960), "1m 0s"),
            (ms(65_300), "1m 5s"),
            (ms(3_723_000), "1h 2m"),
            (ms(343_567_065), "3d 23h"),
        ] {
            assert_eq!(human_duration(d), text, "{d:?}");
        }
    }

    #[test]
    fn absurd_lengths_are_an_error_not_a_panic() {
        for input in [
            "100000000000000000000000d",
            "1e300",
            "99999999999999999999w5s",
        ] {
            let e = parse_duration(input).unwrap_err();
            assert!(e.to_string().contains("too long"), "{input}: {e}");
        }
    }

    #[test]
    fn parses_the_forms_users_write() {
        let cases = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            ("250ms", 250),
            ("90", 90_000),
            ("1.5", 1_500),
            ("1w", 604_800_000),
            ("1h 5m", 3_900_000),
        ];
        for (input, ms) in cases {
            assert_eq!(parse_duration(input).unwrap().as_millis(), ms, "{input}");
        }
    }

    #[test]
    fn rejects_nonsense_with_the_input_named() {
        for bad in ["", "abc", "5x", "-3", "m5", "1h30"] {
            let e = parse_duration(bad).unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains("invalid duration"));
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["1h30m", "45s", "250ms", "2d", "1d1h1m1s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
