//! Canonical JSON (RFC 8785), SHA-256, hex and UTC time formatting shared by every file of a
//! package. One place, so a hash computed while building equals the one computed while verifying.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::{Duration, UNIX_EPOCH};

/// RFC 8785 (JCS) bytes of `value`.
pub fn jcs<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json_canonicalizer::to_vec(value)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha256(data))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses lower- or upper-case hex of exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim().as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (val(s[2 * i])? << 4) | val(s[2 * i + 1])?;
    }
    Some(out)
}

/// RFC 3339 UTC with milliseconds (`2026-11-30T06:55:29.123Z`), the form STIX requires.
pub fn rfc3339_ms(ns: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ns);
    humantime::format_rfc3339_millis(t).to_string()
}

/// RFC 3339 UTC with the fraction cut to microseconds and its trailing zeros dropped
/// (`2026-03-01T10:00:00Z`, `2026-03-01T10:00:00.5Z`): the form the Python `stix2` library
/// writes, which matters where a timestamp feeds a deterministic SCO id.
pub fn rfc3339_trimmed(ns: u64) -> String {
    let secs = rfc3339_s(ns);
    let micros = (ns / 1_000) % 1_000_000;
    if micros == 0 {
        return secs;
    }
    let frac = format!("{micros:06}");
    format!(
        "{}.{}Z",
        &secs[..secs.len() - 1],
        frac.trim_end_matches('0')
    )
}

/// RFC 3339 UTC in whole seconds (`2026-11-30T06:55:29Z`), for human text.
pub fn rfc3339_s(ns: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(ns / 1_000_000_000);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The date part (`2026-11-30`) of an event time.
pub fn date(ns: u64) -> String {
    rfc3339_s(ns)[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_times_format_as_utc() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex::<4>("0001ABff"), Some(b));
        assert_eq!(unhex::<4>("0001ab"), None);
        assert_eq!(unhex::<4>("0001abzz"), None);
        assert_eq!(
            rfc3339_ms(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(rfc3339_s(1_700_000_000_999_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(date(1_700_000_000_000_000_000), "2023-11-14");
        assert_eq!(
            rfc3339_trimmed(1_700_000_000_000_000_000),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339_trimmed(1_700_000_000_500_000_999),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(
            rfc3339_trimmed(1_700_000_000_000_001_000),
            "2023-11-14T22:13:20.000001Z"
        );
    }

    #[test]
    fn jcs_sorts_keys_and_drops_whitespace() {
        let v = serde_json::json!({"b": 1, "a": [1.0, "x"], "c": {"z": null, "y": true}});
        assert_eq!(
            String::from_utf8(jcs(&v).unwrap()).unwrap(),
            r#"{"a":[1,"x"],"b":1,"c":{"y":true,"z":null}}"#
        );
    }
}
