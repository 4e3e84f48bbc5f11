//! Kubernetes resource quantities (`250m`, `64Mi`, `1G`, `1e3`), held exactly.
//!
//! The grammar is the one of `resource.Quantity` in Kubernetes apimachinery:
//!
//! ```text
//! quantity  ::= [sign] number suffix
//! sign      ::= "+" | "-"
//! number    ::= digits | digits "." [digits] | "." digits
//! suffix    ::= binarySI | decimalSI | exponent
//! binarySI  ::= "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"          (2^10 .. 2^60)
//! decimalSI ::= "n" | "u" | "m" | "" | "k" | "M" | "G" | "T" | "P" | "E"
//! exponent  ::= ("e" | "E") [sign] digits                          (10^n)
//! ```
//!
//! No whitespace is allowed. A [`Quantity`] stores the value as a whole number
//! of nano-units (10^-9) in an `i128`, so every value Kubernetes can express
//! at its own nano precision is exact here; digits below a nano-unit round the
//! magnitude up, as Kubernetes does. Magnitudes that do not fit (about
//! 1.7e29 units) are rejected with [`QuantityError::Overflow`].

use std::fmt;
use std::str::FromStr;

/// A Kubernetes resource quantity (`250m`, `64Mi`, `1G`, `1e3`, `0.5`,
/// `+1.5e-3`), held exactly as a whole number of nano-units.
///
/// Ordering and equality are numeric: `1k == 1000 == 1e3`.
///
/// ```
/// use km::resources::Quantity;
/// assert_eq!(Quantity::parse("250m").unwrap().cpus(), 0.25);
/// assert_eq!(Quantity::parse("64Mi").unwrap().megabytes(), 64.0);
/// assert_eq!(Quantity::parse("1G").unwrap().megabytes(), 953.675);
/// assert!(Quantity::parse("64MB").is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    nanos: i128,
}

/// A string that is not a valid Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow the quantity grammar.
    #[error(
        "invalid quantity {input:?}: expected a number followed by one of n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e3"
    )]
    Invalid {
        /// The text as given.
        input: String,
    },
    /// The value is too large to hold exactly.
    #[error(
        "quantity {input:?} is too large: expected a magnitude below about 1.7e29 (km holds quantities exactly, in units of 10^-9)"
    )]
    Overflow {
        /// The text as given.
        input: String,
    },
}

/// Nano-units per unit.
const NANOS: i128 = 1_000_000_000;
/// Nano-units per milli-unit.
const NANOS_PER_MILLI: i128 = 1_000_000;
/// Nano-bytes per thousandth of a megabyte (2^20 bytes / 1000).
const NANOS_PER_MILLI_MB: i128 = NANOS_PER_MILLI * (1 << 20);
/// Decimal digits of the largest magnitude an `i128` can hold (2^127 has 39).
const MAX_DIGITS: i64 = 39;

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// Parses the Kubernetes text form; see the [module docs](self) for the
    /// grammar.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let invalid = || QuantityError::Invalid {
            input: s.to_owned(),
        };
        let overflow = || QuantityError::Overflow {
            input: s.to_owned(),
        };
        let lexed = lex(s).ok_or_else(invalid)?;
        let mag = magnitude(&lexed).ok_or_else(overflow)?;
        let nanos = if lexed.negative {
            0i128.checked_sub_unsigned(mag)
        } else {
            i128::try_from(mag).ok()
        }
        .ok_or_else(overflow)?;
        Ok(Quantity { nanos })
    }

    /// Reads a quantity from the Kubernetes API types.
    pub fn from_k8s(
        q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Self, QuantityError> {
        Self::parse(&q.0)
    }

    /// A quantity of `nanos` nano-units (10^-9).
    pub const fn from_nanos(nanos: i128) -> Self {
        Quantity { nanos }
    }

    /// The value in nano-units (10^-9).
    pub const fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The value as a float (nearest representable).
    pub fn as_f64(&self) -> f64 {
        let whole = self.nanos / NANOS;
        let frac = self.nanos % NANOS;
        whole as f64 + frac as f64 / NANOS as f64
    }

    /// CPU cores for Mesos `cpus`, rounded UP to 0.001 (so `1n` asks for
    /// `0.001` and a request is never shrunk).
    pub fn cpus(&self) -> f64 {
        ceil_div(self.nanos, NANOS_PER_MILLI) as f64 / 1000.0
    }

    /// Megabytes (2^20 bytes) for Mesos `mem`/`disk`, rounded UP to 0.001.
    pub fn megabytes(&self) -> f64 {
        ceil_div(self.nanos, NANOS_PER_MILLI_MB) as f64 / 1000.0
    }

    /// True when below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// True when zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// True when a whole number of units.
    pub fn is_integer(&self) -> bool {
        self.nanos % NANOS == 0
    }

    /// The sum, saturating at the bounds.
    pub fn saturating_add(self, o: Quantity) -> Quantity {
        Quantity::from_nanos(self.nanos.saturating_add(o.nanos))
    }

    /// The sum, or `None` if it does not fit.
    pub fn checked_add(self, o: Quantity) -> Option<Quantity> {
        self.nanos.checked_add(o.nanos).map(Quantity::from_nanos)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Quantity {
    /// The canonical decimal form: the largest of `E P T G M k "" m u n`
    /// that shows the value as an integer (`1500m`, `64k`, `1048576`, `0`).
    /// It parses back to the same quantity.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SUFFIXES: [(&str, i128); 10] = [
            ("E", 1_000_000_000_000_000_000 * NANOS),
            ("P", 1_000_000_000_000_000 * NANOS),
            ("T", 1_000_000_000_000 * NANOS),
            ("G", 1_000_000_000 * NANOS),
            ("M", 1_000_000 * NANOS),
            ("k", 1_000 * NANOS),
            ("", NANOS),
            ("m", NANOS_PER_MILLI),
            ("u", 1_000),
            ("n", 1),
        ];
        if self.nanos == 0 {
            return f.write_str("0");
        }
        for (suffix, unit) in SUFFIXES {
            if self.nanos % unit == 0 {
                return write!(f, "{}{suffix}", self.nanos / unit);
            }
        }
        // Unreachable: every value is a whole number of nano-units.
        write!(f, "{}n", self.nanos)
    }
}

/// Ceiling of `n / d` for `d > 0`.
fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    if n.rem_euclid(d) == 0 { q } else { q + 1 }
}

/// A quantity split into its parts, before any arithmetic.
struct Lexed<'a> {
    negative: bool,
    int_digits: &'a [u8],
    frac_digits: &'a [u8],
    /// Power of ten from a decimal suffix or exponent (saturating).
    exp10: i64,
    /// Power of two from a binary suffix.
    exp2: u32,
}

/// Splits `s` per the grammar; `None` if it does not match.
fn lex(s: &str) -> Option<Lexed<'_>> {
    let b = s.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let int_digits = &b[int_start..i];
    let mut frac_digits: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        frac_digits = &b[frac_start..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let (exp10, exp2) = match &s[i..] {
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
        rest => (exponent(rest)?, 0),
    };
    Some(Lexed {
        negative,
        int_digits,
        frac_digits,
        exp10,
        exp2,
    })
}

/// Parses `e<int>` / `E<int>` (sign optional), saturating huge exponents.
fn exponent(s: &str) -> Option<i64> {
    let rest = s.strip_prefix(['e', 'E'])?;
    let (negative, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mag = digits.bytes().fold(0i64, |acc, c| {
        acc.saturating_mul(10).saturating_add(i64::from(c - b'0'))
    });
    Some(if negative { -mag } else { mag })
}

/// The magnitude in nano-units, rounded up; `None` if above `2^127`.
fn magnitude(l: &Lexed<'_>) -> Option<u128> {
    // All significant digits, as values 0..=9, most significant first.
    let mut digits: Vec<u8> = l
        .int_digits
        .iter()
        .chain(l.frac_digits)
        .map(|c| c - b'0')
        .skip_while(|&d| d == 0)
        .collect();
    // The value is `digits * 10^exp * 2^exp2` nano-units.
    let frac_len = i64::try_from(l.frac_digits.len()).unwrap_or(i64::MAX);
    let mut exp = l.exp10.saturating_sub(frac_len).saturating_add(9);
    while digits.last() == Some(&0) {
        digits.pop();
        exp = exp.saturating_add(1);
    }
    if digits.is_empty() {
        return Some(0);
    }
    if l.exp2 > 0 {
        multiply_pow2(&mut digits, l.exp2);
    }
    let len = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    if exp >= 0 {
        if len.saturating_add(exp) > MAX_DIGITS {
            return None;
        }
        let mut v = digits_value(&digits)?;
        for _ in 0..exp {
            v = v.checked_mul(10)?;
        }
        limit(v)
    } else {
        // Keep the digits above the decimal point; what is cut off is never
        // zero (at least the last, non-zero digit), so the magnitude rounds up.
        let keep = len.saturating_add(exp);
        if keep > MAX_DIGITS {
            return None;
        }
        let whole = match usize::try_from(keep) {
            Ok(k) if k > 0 => digits_value(&digits[..k])?,
            _ => 0,
        };
        limit(whole.checked_add(1)?)
    }
}

/// Rejects magnitudes no `i128` can hold (the negative side reaches 2^127).
fn limit(v: u128) -> Option<u128> {
    (v <= 1u128 << 127).then_some(v)
}

/// The number written by `digits`, or `None` if it exceeds `u128`.
fn digits_value(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u128::from(d))
    })
}

/// Multiplies a decimal digit string by `2^k` (`k <= 60`) in place.
fn multiply_pow2(digits: &mut Vec<u8>, k: u32) {
    let factor = 1u128 << k;
    let mut carry = 0u128;
    for d in digits.iter_mut().rev() {
        let x = u128::from(*d) * factor + carry;
        *d = (x % 10) as u8;
        carry = x / 10;
    }
    let mut head = Vec::new();
    while carry > 0 {
        head.push((carry % 10) as u8);
        carry /= 10;
    }
    head.reverse();
    digits.splice(0..0, head);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        match Quantity::parse(s) {
            Ok(v) => v,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn units(n: i128) -> Quantity {
        Quantity::from_nanos(n * NANOS)
    }

    #[test]
    fn suffixes() {
        assert_eq!(q("1Ki"), units(1024));
        assert_eq!(q("1k"), units(1000));
        assert_eq!(q("1Mi"), units(1_048_576));
        assert_eq!(q("1Gi"), units(1 << 30));
        assert_eq!(q("1Ti"), units(1 << 40));
        assert_eq!(q("1Pi"), units(1 << 50));
        assert_eq!(q("1Ei"), units(1 << 60));
        assert_eq!(q("250m"), Quantity::from_nanos(250_000_000));
        assert_eq!(q("250m").as_f64(), 0.25);
        assert_eq!(q("1e3"), units(1000));
        assert_eq!(q("1E3"), units(1000));
        assert_eq!(q("1E"), units(1_000_000_000_000_000_000));
        assert_eq!(q("5n"), Quantity::from_nanos(5));
        assert_eq!(q("5u"), Quantity::from_nanos(5000));
        assert_eq!(q("2M"), units(2_000_000));
        assert_eq!(q("3G"), units(3_000_000_000));
        assert_eq!(q("1T"), units(1_000_000_000_000));
        assert_eq!(q("1P"), units(1_000_000_000_000_000));
        assert_eq!(q("0.5"), Quantity::from_nanos(500_000_000));
        assert_eq!(q("+1.5e-3"), Quantity::from_nanos(1_500_000));
        assert_eq!(q("1.5Gi"), units(3 << 29));
        assert_eq!(q(".5"), q("0.5"));
        assert_eq!(q("5."), units(5));
        assert_eq!(q("-1.5"), Quantity::from_nanos(-1_500_000_000));
        assert_eq!(q("0.1Ki"), Quantity::from_nanos(102_400_000_000));
        assert_eq!(q("007"), units(7));
        assert_eq!(q("1e+3"), units(1000));
        assert_eq!(q("1000e-3"), units(1));
    }

    #[test]
    fn conversions_round_up() {
        assert_eq!(q("64Mi").megabytes(), 64.0);
        assert_eq!(q("1G").megabytes(), 953.675);
        assert_eq!(q("1").megabytes(), 0.001);
        assert_eq!(q("0").megabytes(), 0.0);
        assert_eq!(q("250m").cpus(), 0.25);
        assert_eq!(q("1n").cpus(), 0.001);
        assert_eq!(q("1500001u").cpus(), 1.501);
        assert_eq!(q("2").cpus(), 2.0);
        assert_eq!(q("-1n").cpus(), 0.0);
        assert!(q("-1").is_negative());
        assert!(!q("-0").is_negative());
        assert!(q("0.0").is_zero());
    }

    #[test]
    fn sub_nano_digits_round_magnitude_up() {
        assert_eq!(q("0.1n"), Quantity::from_nanos(1));
        assert_eq!(q("1.5n"), Quantity::from_nanos(2));
        assert_eq!(q("-1.5n"), Quantity::from_nanos(-2));
        assert_eq!(q("1e-99999999999999999999999"), Quantity::from_nanos(1));
        assert_eq!(q("0e99999999999999999999999"), Quantity::ZERO);
        assert_eq!(q("1.0000000001"), Quantity::from_nanos(1_000_000_001));
    }

    #[test]
    fn huge_values_overflow_with_a_clear_error() {
        assert_eq!(q("1e29"), Quantity::from_nanos(10i128.pow(38)));
        for s in [
            "1e30",
            "200e27",
            "1e99999999999999999999999",
            "1000000000000Ei",
        ] {
            let err = Quantity::parse(s).unwrap_err();
            assert_eq!(err, QuantityError::Overflow { input: s.into() });
            assert!(err.to_string().contains("is too large"), "{err}");
        }
        let min = Quantity::from_nanos(i128::MIN);
        assert_eq!(q(&min.to_string()), min);
        let max = Quantity::from_nanos(i128::MAX);
        assert_eq!(q(&max.to_string()), max);
    }

    #[test]
    fn invalid_inputs_are_rejected_with_the_expected_form() {
        assert_eq!(
            Quantity::parse("64MB").unwrap_err().to_string(),
            "invalid quantity \"64MB\": expected a number followed by one of n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e3"
        );
        for s in [
            "", " 1", "1 ", "+", "-", ".", "abc", "1K", "1ki", "1KiB", "e3", "1e", "1e+", "1e1.5",
            "1.2.3", "--1", "+-1", "1i", "0x10", "1_000", "1,5", "1m1", "∞",
        ] {
            assert_eq!(
                Quantity::parse(s),
                Err(QuantityError::Invalid { input: s.into() }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn display_is_canonical_decimal() {
        assert_eq!(q("250m").to_string(), "250m");
        assert_eq!(q("1.5").to_string(), "1500m");
        assert_eq!(q("1Ki").to_string(), "1024");
        assert_eq!(q("64Mi").to_string(), "67108864");
        assert_eq!(q("2000").to_string(), "2k");
        assert_eq!(q("1e18").to_string(), "1E");
        assert_eq!(q("-3u").to_string(), "-3u");
        assert_eq!(q("0.000000001").to_string(), "1n");
        assert_eq!(Quantity::ZERO.to_string(), "0");
    }

    #[test]
    fn from_k8s_and_from_str() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
        assert_eq!(
            Quantity::from_k8s(&K8sQuantity("100m".into())),
            Ok(q("0.1"))
        );
        assert!(Quantity::from_k8s(&K8sQuantity("lots".into())).is_err());
        assert_eq!("64Mi".parse::<Quantity>(), Ok(units(64 << 20)));
        assert_eq!(q("1").checked_add(q("500m")), Some(q("1.5")));
        assert_eq!(Quantity::from_nanos(i128::MAX).checked_add(q("1n")), None);
        assert!(q("1k") > q("999"));
    }

    const DECIMAL: [(&str, u32); 10] = [
        ("n", 0),
        ("u", 3),
        ("m", 6),
        ("", 9),
        ("k", 12),
        ("M", 15),
        ("G", 18),
        ("T", 21),
        ("P", 24),
        ("E", 27),
    ];
    const BINARY: [(&str, u32); 6] = [
        ("Ki", 10),
        ("Mi", 20),
        ("Gi", 30),
        ("Ti", 40),
        ("Pi", 50),
        ("Ei", 60),
    ];

    proptest! {
        #[test]
        fn display_round_trips(n in any::<i128>()) {
            let v = Quantity::from_nanos(n);
            prop_assert_eq!(Quantity::parse(&v.to_string()), Ok(v));
        }

        #[test]
        fn integers_with_suffix(m in any::<i64>(), s in 0usize..16) {
            let (suffix, expected) = if s < DECIMAL.len() {
                let (suffix, p) = DECIMAL[s];
                (suffix, i128::from(m).checked_mul(10i128.pow(p)))
            } else {
                let (suffix, k) = BINARY[s - DECIMAL.len()];
                (suffix, i128::from(m).checked_mul(NANOS).and_then(|x| x.checked_mul(1i128 << k)))
            };
            let text = format!("{m}{suffix}");
            match expected {
                Some(n) => prop_assert_eq!(Quantity::parse(&text), Ok(Quantity::from_nanos(n))),
                None => prop_assert_eq!(
                    Quantity::parse(&text),
                    Err(QuantityError::Overflow { input: text.clone() })
                ),
            }
        }

        #[test]
        fn fractions_match_exact_model(
            neg in any::<bool>(),
            int in 0u64..1_000_000,
            frac in prop::collection::vec(0u8..10, 0..7),
            s in 0usize..14,
            exp in -12i32..12,
        ) {
            let frac_text: String = frac.iter().map(|d| char::from(b'0' + d)).collect();
            let numerator = frac.iter().fold(i128::from(int), |acc, &d| acc * 10 + i128::from(d));
            let denom = 10i128.pow(frac.len() as u32);
            // Value = numerator / denom * scale_num / scale_den units.
            let (suffix, scale_num, scale_den) = if s < 8 {
                let (suffix, p) = DECIMAL[s];
                (suffix.to_string(), 10i128.pow(p), 1)
            } else if s < 12 {
                let (suffix, k) = BINARY[s - 8];
                (suffix.to_string(), NANOS << k, 1)
            } else if exp >= 0 {
                (format!("e{exp}"), NANOS * 10i128.pow(exp as u32), 1)
            } else {
                (format!("e{exp}"), NANOS, 10i128.pow(exp.unsigned_abs()))
            };
            let mag = ceil_div(numerator * scale_num, denom * scale_den);
            let expected = if neg { -mag } else { mag };
            let text = format!("{}{int}.{frac_text}{suffix}", if neg { "-" } else { "+" });
            prop_assert_eq!(Quantity::parse(&text), Ok(Quantity::from_nanos(expected)), "{}", text);
        }
    }
}
