//! Amounts and dates as the emails word them.

use chrono::{DateTime, Utc};

/// A date for people, e.g. "2026-12-01".
pub(super) fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// Currencies Stripe counts in whole units (no cents).
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// An amount in Stripe's minor units for people: "$49.00", "€12.50", "1200 JPY".
pub fn money(minor: i64, currency: &str) -> String {
    let currency = currency.to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&currency.as_str()) {
        return format!("{minor} {}", currency.to_ascii_uppercase());
    }
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let amount = format!("{}.{:02}", abs / 100, abs % 100);
    match currency.as_str() {
        "usd" => format!("{sign}${amount}"),
        "eur" => format!("{sign}€{amount}"),
        "gbp" => format!("{sign}£{amount}"),
        other => format!("{sign}{amount} {}", other.to_ascii_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_people_write_them() {
        assert_eq!(money(4900, "usd"), "$49.00");
        assert_eq!(money(1250, "EUR"), "€12.50");
        assert_eq!(money(5, "gbp"), "£0.05");
        assert_eq!(money(1200, "jpy"), "1200 JPY");
        assert_eq!(money(999, "chf"), "9.99 CHF");
        assert_eq!(money(-150, "usd"), "-$1.50");
    }
}
