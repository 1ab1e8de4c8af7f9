//! Personal data: email addresses, phone numbers, payment card numbers
//! (Luhn-checked, known issuer prefixes), IBANs (mod-97 checked), US social
//! security numbers and UK national insurance numbers.
//!
//! National ids are the two whose format is specific enough to find in free
//! text without a checksum: an SSN only in its dashed `AAA-GG-SSSS` form
//! with the ranges the SSA never issues excluded, a NINO with the prefixes
//! HMRC never allocates excluded. Ids that are bare digit runs (most other
//! countries') would be found in every order number, so they are not
//! claimed. Phone numbers are found only when written as phone numbers: an
//! international `+` number, or a North American number with its
//! punctuation; a bare run of digits is not a phone number here.

use std::sync::LazyLock;

use regex::Regex;

use super::detector::{Action, Detector, Direction, Hit, Spans};

pub struct Pii;

const KINDS: &[&str] = &["email", "phone", "card", "iban", "us_ssn", "uk_nino"];

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)")
        .expect("email pattern compiles")
});

static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\+[1-9][0-9]{0,2}(?:[ .\-]?\(?[0-9]{1,4}\)?)(?:[ .\-]?[0-9]{2,5}){1,5}",
        r"|\([2-9][0-9]{2}\)[ ]?[2-9][0-9]{2}[ .\-][0-9]{4}",
        r"|(?-u:\b)[2-9][0-9]{2}-[2-9][0-9]{2}-[0-9]{4}(?-u:\b)",
        r"|(?-u:\b)[2-9][0-9]{2}\.[2-9][0-9]{2}\.[0-9]{4}(?-u:\b)",
    ))
    .expect("phone pattern compiles")
});

static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u:\b)[2-6][0-9](?:[ \-]?[0-9]){11,17}(?-u:\b)").expect("card pattern compiles"));

static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11,32}(?-u:\b)").expect("IBAN pattern compiles")
});

static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u:\b)([0-9]{3})-([0-9]{2})-([0-9]{4})(?-u:\b)").expect("SSN pattern compiles"));

static NINO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?-u:\b)")
        .expect("NINO pattern compiles")
});

/// Whether the text around `start..end` continues the number (a digit, or
/// a separator followed by a digit): then it is part of something longer.
fn embedded(text: &str, start: usize, end: usize) -> bool {
    continues_left(text, start) || continues_right(text, end)
}

fn continues_left(text: &str, start: usize) -> bool {
    let b = text.as_bytes();
    let sep = |c: u8| matches!(c, b'.' | b'-' | b'/' | b':');
    (start > 0 && b[start - 1].is_ascii_digit()) || (start > 1 && sep(b[start - 1]) && b[start - 2].is_ascii_digit())
}

fn continues_right(text: &str, end: usize) -> bool {
    let b = text.as_bytes();
    let sep = |c: u8| matches!(c, b'.' | b'-' | b'/' | b':');
    (end < b.len() && b[end].is_ascii_digit()) || (end + 1 < b.len() && sep(b[end]) && b[end + 1].is_ascii_digit())
}

pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Issuer prefixes and lengths of the card networks.
fn card_network(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k: usize| d[..k].iter().fold(0u32, |a, x| a * 10 + u32::from(*x));
    match d[0] {
        4 => matches!(n, 13 | 16 | 19),
        5 => (51..=55).contains(&p(2)) && n == 16,
        2 => (2221..=2720).contains(&p(4)) && n == 16,
        3 => {
            (matches!(p(2), 34 | 37) && n == 15)
                || (p(2) == 35 && (16..=19).contains(&n))
                || (matches!(p(2), 36 | 38 | 39) || (300..=305).contains(&p(3))) && (14..=19).contains(&n)
        }
        6 => (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) || p(2) == 62) && (16..=19).contains(&n),
        _ => false,
    }
}

/// IBAN length by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

fn iban_valid(chars: &[u8]) -> bool {
    let country = std::str::from_utf8(&chars[..2.min(chars.len())]).unwrap_or("");
    if IBAN_LENGTHS.iter().find(|(c, _)| *c == country).is_none_or(|(_, n)| *n != chars.len()) {
        return false;
    }
    let mut rem = 0u32;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// Every piece of personal data in `text`.
pub fn find(text: &str, _key: Option<&str>, out: &mut Vec<Hit>) {
    let first = out.len();
    let mut taken = Spans::default();
    for m in EMAIL.find_iter(text) {
        out.push(Hit { start: m.start(), end: m.end(), kind: "email" });
    }
    for m in SSN.captures_iter(text) {
        let (Some(all), Some(a), Some(g), Some(s)) = (m.get(0), m.get(1), m.get(2), m.get(3)) else { continue };
        let area = a.as_str();
        if area == "000" || area == "666" || area.starts_with('9') || g.as_str() == "00" || s.as_str() == "0000" {
            continue;
        }
        if embedded(text, all.start(), all.end()) {
            continue;
        }
        out.push(Hit { start: all.start(), end: all.end(), kind: "us_ssn" });
    }
    taken.extend(out[first..].iter().map(|h| (h.start, h.end)));
    for m in PHONE.find_iter(text) {
        if embedded(text, m.start(), m.end()) || taken.overlaps(m.start(), m.end()) {
            continue;
        }
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        if (10..=15).contains(&digits) || m.as_str().starts_with('+') && (8..=15).contains(&digits) {
            out.push(Hit { start: m.start(), end: m.end(), kind: "phone" });
        }
    }
    taken.extend(out[first..].iter().map(|h| (h.start, h.end)));
    for m in CARD.find_iter(text) {
        // Only the left edge is checked on the whole match: it may run on into
        // a following number (`4111 ... 1111 12/28`); the longest prefix that
        // ends a digit group and checks out wins, and its right edge is checked.
        if continues_left(text, m.start()) {
            continue;
        }
        let s = m.as_str().as_bytes();
        let at: Vec<usize> = (0..s.len()).filter(|i| s[*i].is_ascii_digit()).collect();
        let digits: Vec<u8> = at.iter().map(|i| s[*i] - b'0').collect();
        let fits = |n: usize| {
            let end = m.start() + at[n - 1] + 1;
            (end == m.end() || matches!(text.as_bytes()[end], b' ' | b'-'))
                && !continues_right(text, end)
                && card_network(&digits[..n])
                && luhn(&digits[..n])
        };
        if let Some(n) = (13..=digits.len().min(19)).rev().find(|n| fits(*n)) {
            let end = m.start() + at[n - 1] + 1;
            if !taken.overlaps(m.start(), end) {
                out.push(Hit { start: m.start(), end, kind: "card" });
            }
        }
    }
    for m in IBAN.find_iter(text) {
        // The pattern may run on into following capitals: the country's length decides.
        let s = m.as_str();
        let chars: Vec<(usize, u8)> = s.bytes().enumerate().filter(|(_, b)| *b != b' ').collect();
        let compact: Vec<u8> = chars.iter().map(|(_, b)| *b).collect();
        let country = &s[..2];
        let want = IBAN_LENGTHS.iter().find(|(c, _)| *c == country).map_or(0, |(_, n)| *n);
        if let Some(n) = Some(want).filter(|n| *n <= compact.len() && iban_valid(&compact[..*n])) {
            let end = m.start() + chars[n - 1].0 + 1;
            out.push(Hit { start: m.start(), end, kind: "iban" });
        }
    }
    for m in NINO.captures_iter(text) {
        let (Some(all), Some(prefix)) = (m.get(0), m.get(1)) else { continue };
        if matches!(prefix.as_str(), "BG" | "GB" | "NK" | "KN" | "TN" | "NT" | "ZZ") {
            continue;
        }
        out.push(Hit { start: all.start(), end: all.end(), kind: "uk_nino" });
    }
}

impl Detector for Pii {
    fn name(&self) -> &'static str {
        "pii"
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn actions(&self, _direction: Direction) -> &'static [Action] {
        &[Action::Block, Action::Mask]
    }

    fn default_action(&self, direction: Direction) -> Action {
        match direction {
            Direction::Arguments => Action::Off,
            Direction::Results => Action::Mask,
        }
    }

    fn label(&self, kind: &str) -> &'static str {
        match kind {
            "email" => "EMAIL",
            "phone" => "PHONE",
            "card" => "CARD",
            "iban" => "IBAN",
            "us_ssn" => "SSN",
            "uk_nino" => "NINO",
            _ => "PII",
        }
    }

    fn find(&self, text: &str, key: Option<&str>, out: &mut Vec<Hit>) {
        find(text, key, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        find(text, None, &mut out);
        out.into_iter().map(|h| (h.kind, text[h.start..h.end].to_string())).collect()
    }

    #[test]
    fn positives() {
        let cases: &[(&str, &str, &str)] = &[
            ("mail ann.lee+x@mail.example.co.uk now", "email", "ann.lee+x@mail.example.co.uk"),
            ("call +44 20 7946 0958 today", "phone", "+44 20 7946 0958"),
            ("call (415) 555-0132.", "phone", "(415) 555-0132"),
            ("or 415-555-0132", "phone", "415-555-0132"),
            ("card 4111 1111 1111 1111 exp", "card", "4111 1111 1111 1111"),
            ("amex 378282246310005", "card", "378282246310005"),
            ("mc 5500-0000-0000-0004", "card", "5500-0000-0000-0004"),
            ("visa 4111 1111 1111 1111 12 28", "card", "4111 1111 1111 1111"),
            ("visa 4111111111111111 05/27", "card", "4111111111111111"),
            ("IBAN GB82 WEST 1234 5698 7654 32 AND MORE", "iban", "GB82 WEST 1234 5698 7654 32"),
            ("DE89370400440532013000", "iban", "DE89370400440532013000"),
            ("ssn 123-45-6789", "us_ssn", "123-45-6789"),
            ("NI AB 12 34 56 C", "uk_nino", "AB 12 34 56 C"),
        ];
        for (text, kind, what) in cases {
            assert_eq!(found(text), vec![(*kind, what.to_string())], "{text}");
        }
    }

    #[test]
    fn look_alikes_are_not_personal_data() {
        for text in [
            "released 2026-11-25 at 10:00:00",
            "version 1.2.3 and 10.0.0.1",
            "ranges 1000-2000 and 3000-4000",
            "order 4155550132",
            "card 4111 1111 1111 1112",
            "ts 1732526400000",
            "GB83 WEST 1234 5698 7654 32",
            "000-12-3456 and 666-12-3456 and 900-12-3456 and 123-00-4567",
            "QQ123456C GB123456A",
            "uuid 123e4567-e89b-12d3-a456-426614174000",
            "ping 192.168.100.200",
            "user@localhost",
        ] {
            assert_eq!(found(text), vec![], "{text}");
        }
    }

    #[test]
    fn luhn_and_mod97() {
        assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
        assert!(iban_valid(b"GB82WEST12345698765432"));
        assert!(!iban_valid(b"GB83WEST12345698765432"));
    }
}
