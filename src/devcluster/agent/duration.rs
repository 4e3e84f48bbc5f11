//! Durations in the text form Mesos uses (stout's `Duration`): a number and
//! one of `ns`, `us`, `ms`, `secs`, `mins`, `hrs`, `days`, `weeks`.
//!
//! [`format`](fn@format) writes what a Mesos agent writes into an executor's
//! environment (`5secs`, `15mins`, `1.5mins`); [`parse`] reads that form and
//! also the short spellings people type on a command line (`5s`, `15m`, `2h`).

use std::time::Duration;

/// A duration text that is not a number followed by a known unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a duration: expected a number and a unit, e.g. 5secs, 500ms, 15mins, 2hrs (units: ns, us, ms, s/secs, m/mins, h/hrs, d/days, w/weeks)"
)]
pub struct DurationError {
    /// The text as given.
    pub text: String,
}

const UNITS: &[(&[&str], f64)] = &[
    (&["ns", "nsecs"], 1e-9),
    (&["us", "usecs"], 1e-6),
    (&["ms", "msecs"], 1e-3),
    (&["s", "sec", "secs"], 1.0),
    (&["m", "min", "mins"], 60.0),
    (&["h", "hr", "hrs"], 3600.0),
    (&["d", "day", "days"], 86_400.0),
    (&["w", "week", "weeks"], 604_800.0),
];

/// Reads a duration such as `5secs`, `5s`, `1.5mins` or `100ms`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        text: text.to_owned(),
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| err())?;
    let scale = UNITS
        .iter()
        .find(|(names, _)| names.contains(&unit))
        .map(|(_, s)| *s)
        .ok_or_else(err)?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| err())
}

/// Writes `d` as stout does: in the largest unit not exceeding it (below a
/// microsecond in `ns`, below a millisecond in `us`, ..., from a week on in
/// `weeks`), as an integer when whole, else a decimal.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos() as f64;
    let steps: &[(f64, &str)] = &[
        (1e3, "ns"),
        (1e6, "us"),
        (1e9, "ms"),
        (60e9, "secs"),
        (3600e9, "mins"),
        (86_400e9, "hrs"),
        (604_800e9, "days"),
    ];
    let mut unit_ns = 1.0;
    for (limit, name) in steps {
        if nanos < *limit {
            return number(nanos / unit_ns, name);
        }
        unit_ns = *limit;
    }
    number(nanos / 604_800e9, "weeks")
}

fn number(v: f64, unit: &str) -> String {
    // Fifteen significant digits, like stout's stream precision, without
    // trailing zeros.
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_stout() {
        assert_eq!(format(Duration::from_secs(5)), "5secs");
        assert_eq!(format(Duration::from_secs(15 * 60)), "15mins");
        assert_eq!(format(Duration::from_secs(2)), "2secs");
        assert_eq!(format(Duration::from_millis(1500)), "1.5secs");
        assert_eq!(format(Duration::from_secs(90)), "1.5mins");
        assert_eq!(format(Duration::from_millis(100)), "100ms");
        assert_eq!(format(Duration::from_secs(3600)), "1hrs");
        assert_eq!(format(Duration::from_secs(86_400)), "1days");
        assert_eq!(format(Duration::from_secs(14 * 86_400)), "2weeks");
        assert_eq!(format(Duration::ZERO), "0ns");
    }

    #[test]
    fn parses_mesos_and_short_forms() {
        assert_eq!(parse("5secs"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("15mins"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1.5mins"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2hrs"), Ok(Duration::from_secs(7200)));
        for d in [1, 5, 90, 900, 7200] {
            let d = Duration::from_secs(d);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in ["", "5", "secs", "5 parsecs", "-5s", "1.2.3s", "5S"] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("expected a number and a unit"),
                "{bad}: {e}"
            );
        }
    }
}
