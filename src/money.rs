//! Money as integer micro-units: parsing and printing, never floats.

use std::fmt;

/// An amount in micro-units of the configured currency (1.00 = 1_000_000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    /// Parses a decimal amount such as `"0.50"`, `"12"` or `"0.000001"`.
    /// At most six decimals; negative amounts are refused.
    pub fn parse(text: &str) -> Result<Micros, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty amount".into());
        }
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{text}` is not a decimal amount like \"0.50\""));
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (t.contains('.') && frac.is_empty()) {
            return Err(format!("`{text}` is not a decimal amount like \"0.50\""));
        }
        if frac.len() > 6 {
            return Err(format!("`{text}` has more than 6 decimals"));
        }
        let whole: i64 = whole.parse().map_err(|_| format!("`{text}` is too large"))?;
        let mut frac_micros: i64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_micros += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
        }
        whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(frac_micros))
            .map(Micros)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_amounts_exactly() {
        assert_eq!(Micros::parse("0.50"), Ok(Micros(500_000)));
        assert_eq!(Micros::parse("12"), Ok(Micros(12_000_000)));
        assert_eq!(Micros::parse("0.000001"), Ok(Micros(1)));
        assert_eq!(Micros::parse(" 3.1 "), Ok(Micros(3_100_000)));
    }

    #[test]
    fn refuses_what_is_not_an_exact_amount() {
        for bad in ["", "-1", "1.", ".5", "1e3", "0.0000001", "abc", "99999999999999999999"] {
            assert!(Micros::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn displays_six_decimals() {
        assert_eq!(Micros(500_000).to_string(), "0.500000");
        assert_eq!(Micros(-1).to_string(), "-0.000001");
    }
}
