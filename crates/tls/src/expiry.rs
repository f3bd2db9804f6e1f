//! When a certificate stops being valid: its `notAfter`, read from the DER without an X.509
//! library (rustls and webpki do not expose it). Only the path to the validity field is
//! walked, every length is checked against what is left, and anything unexpected is `None`:
//! the metric is then absent and a warning says why, the certificate itself is still served.

/// `notAfter` of a DER certificate, in seconds since the Unix epoch.
pub(crate) fn not_after(der: &[u8]) -> Option<i64> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    //   serialNumber INTEGER, signature AlgorithmIdentifier, issuer Name, validity SEQUENCE {
    //   notBefore Time, notAfter Time }, ... } ... }   (RFC 5280 §4.1)
    let (cert, _) = expect(der, 0x30)?;
    let (mut tbs, _) = expect(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2;
    }
    let (_, tbs) = expect(tbs, 0x02)?;
    let (_, tbs) = expect(tbs, 0x30)?;
    let (_, tbs) = expect(tbs, 0x30)?;
    let (validity, _) = expect(tbs, 0x30)?;
    let (_, _, rest) = element(validity)?;
    let (tag, time, _) = element(rest)?;
    match tag {
        0x17 => utc_time(time),
        0x18 => generalized_time(time),
        _ => None,
    }
}

/// The content of the element at the start of `input` if its tag is `tag`, and what follows.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = element(input)?;
    (t == tag).then_some((content, rest))
}

/// One DER element: its tag, content and what follows (definite lengths up to 4 bytes).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (bytes, rest) = input.split_at(n);
        input = rest;
        bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    (input.len() >= len).then(|| (tag, &input[..len], &input[len..]))
}

/// `YYMMDDHHMMSSZ`; RFC 5280: YY ≥ 50 is 19YY, else 20YY.
fn utc_time(t: &[u8]) -> Option<i64> {
    if t.len() != 13 {
        return None;
    }
    let yy = digits(&t[..2])?;
    let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
    seconds(year, &t[2..])
}

/// `YYYYMMDDHHMMSSZ`.
fn generalized_time(t: &[u8]) -> Option<i64> {
    if t.len() != 15 {
        return None;
    }
    seconds(digits(&t[..4])?, &t[4..])
}

/// `MMDDHHMMSSZ` of `year`, as Unix seconds.
fn seconds(year: i64, t: &[u8]) -> Option<i64> {
    if t.len() != 11 || t[10] != b'Z' {
        return None;
    }
    let (month, day) = (digits(&t[0..2])?, digits(&t[2..4])?);
    let (hour, minute, second) = (digits(&t[4..6])?, digits(&t[6..8])?, digits(&t[8..10])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn digits(d: &[u8]) -> Option<i64> {
    d.iter().try_fold(0i64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_arithmetic_matches_known_instants() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(seconds(2000, b"0229120000Z"), Some(951_825_600));
        assert_eq!(utc_time(b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(utc_time(b"500101000000Z"), Some(-631_152_000));
        assert_eq!(generalized_time(b"20500101000000Z"), Some(2_524_608_000));
        for bad in [&b"4912312359Z"[..], b"491331235959Z", b"49123123595+Z", b"491231235959+"] {
            assert_eq!(utc_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn truncated_or_foreign_der_is_none_not_a_panic() {
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01]), None);
        assert_eq!(not_after(b"not a certificate"), None);
    }
}
