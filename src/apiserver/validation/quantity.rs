//! Quantities for validation: the core library's exact parser
//! ([`crate::resources::Quantity`]), reported with kube-apiserver's message.

pub(super) use crate::resources::Quantity;

/// The message upstream returns for a string that is not a quantity at all.
pub(super) const FORMAT_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Parses a quantity; the error is upstream's message.
pub(super) fn parse(s: &str) -> Result<Quantity, &'static str> {
    Quantity::parse(s).map_err(|_| FORMAT_MSG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_through_the_core_parser_with_upstreams_message() {
        assert_eq!(parse("100m").unwrap(), Quantity::from_nanos(100_000_000));
        assert!(parse("1.5Gi").unwrap() > parse("1G").unwrap());
        assert!(parse("-1").unwrap().is_negative());
        assert_eq!(parse("64MB").unwrap_err(), FORMAT_MSG);
        assert!(parse("2").unwrap().is_integer() && !parse("1500m").unwrap().is_integer());
    }
}
