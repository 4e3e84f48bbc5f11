//! A small parser for Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`).
//!
//! Values are kept as a count of nano-units (10^-9) in an `i128`, which is
//! exact for every realistic quantity; parts below a nano-unit are rounded up
//! like upstream does, and values beyond the range saturate.

/// The message upstream returns for a string that is not a quantity at all.
pub(super) const FORMAT_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Why a quantity string could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum QuantityError {
    /// The string does not have the shape of a quantity.
    #[error("{}", FORMAT_MSG)]
    Format,
    /// The number part is malformed.
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    /// The suffix is not a known SI, binary or exponent suffix.
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// A parsed quantity in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct Quantity {
    nanos: i128,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

impl Quantity {
    /// Whether the value is below zero.
    pub(super) fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// Whether the value is a whole number.
    pub(super) fn is_integer(self) -> bool {
        self.nanos % NANOS_PER_UNIT == 0
    }

    /// Saturating addition.
    pub(super) fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
        }
    }
}

/// Multiplies by 10^exp (exp may be negative, rounding away from zero), saturating.
fn scale10(value: i128, exp: i32) -> i128 {
    if value == 0 {
        return 0;
    }
    if exp >= 0 {
        let mut v = value;
        for _ in 0..exp {
            v = match v.checked_mul(10) {
                Some(n) => n,
                None => return if value > 0 { i128::MAX } else { i128::MIN },
            };
        }
        v
    } else {
        let mut v = value;
        for _ in 0..(-exp) {
            let rem = v % 10;
            v /= 10;
            if rem != 0 {
                // Round up (towards +infinity) like upstream's RoundUp to nano scale.
                if value > 0 {
                    v += 1;
                }
            }
            if v == 0 {
                return if value > 0 { 1 } else { 0 };
            }
        }
        v
    }
}

/// Parses a Kubernetes quantity string.
pub(super) fn parse(s: &str) -> Result<Quantity, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Format);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if let Some(&c) = bytes.first()
        && (c == b'+' || c == b'-')
    {
        negative = c == b'-';
        i = 1;
    }
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_part = &s[int_start..i];
    let mut frac_part = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_part = &s[frac_start..i];
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(QuantityError::Numeric);
        }
    } else if int_part.is_empty() {
        return Err(QuantityError::Format);
    }
    let suffix = &s[i..];
    let shape_ok = suffix
        .bytes()
        .all(|c| b"eEinumkKMGTP+-0123456789.".contains(&c));
    if !shape_ok {
        return Err(QuantityError::Format);
    }
    let (exp10, exp2) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            let rest = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or(QuantityError::Suffix)?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(QuantityError::Suffix);
            }
            let e: i32 = rest.parse().map_err(|_| QuantityError::Suffix)?;
            (e, 0)
        }
    };
    // Keep at most 38 significant digits so the mantissa fits an i128.
    let mut mantissa: i128 = 0;
    let mut dropped_int_digits: i32 = 0;
    let mut kept_frac_digits: i32 = 0;
    for c in int_part.bytes() {
        match mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(c - b'0')))
        {
            Some(m) if m < i128::MAX / 100 => mantissa = m,
            _ => dropped_int_digits += 1,
        }
    }
    if dropped_int_digits == 0 {
        for c in frac_part.bytes() {
            match mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(c - b'0')))
            {
                Some(m) if m < i128::MAX / 100 => {
                    mantissa = m;
                    kept_frac_digits += 1;
                }
                _ => break,
            }
        }
    }
    let mut nanos = scale10(mantissa, 9 + exp10 + dropped_int_digits - kept_frac_digits);
    for _ in 0..exp2 {
        nanos = nanos.saturating_mul(2);
    }
    if negative {
        nanos = -nanos;
    }
    Ok(Quantity { nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        match parse(s) {
            Ok(q) => q,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn parses_common_forms() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("1M"), q("1E6"));
        assert_eq!(q(".5"), q("0.5"));
        assert!(q("-1").is_negative());
        assert_eq!(q("0"), Quantity::default());
        assert!(q("2").is_integer());
        assert!(!q("1500m").is_integer());
        assert!(q("100m") < q("1"));
        assert!(q("128Mi") < q("1Gi"));
    }

    #[test]
    fn rounds_sub_nano_up() {
        assert_eq!(q("0.1n"), q("1n"));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(""), Err(QuantityError::Format));
        assert_eq!(parse("abc"), Err(QuantityError::Format));
        assert_eq!(parse("1Gb"), Err(QuantityError::Format));
        assert_eq!(parse("1Ki5"), Err(QuantityError::Suffix));
        assert_eq!(parse("1.2.3"), Err(QuantityError::Suffix));
        assert_eq!(parse("."), Err(QuantityError::Numeric));
        assert_eq!(
            QuantityError::Format.to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    #[test]
    fn huge_values_saturate() {
        assert!(q("1e40") > q("1Ei"));
    }
}
