//! The `ElevenLabs-Signature` header: `t=<unix seconds>,v0=<hex>`, where the hex is the
//! HMAC-SHA256 of `"<t>.<raw body>"` with the webhook secret, and `t` must be within the
//! tolerance of now, either way (a captured delivery cannot be replayed later).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery's signature was refused (each answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the ElevenLabs-Signature header is missing")]
    Missing,
    #[error("the ElevenLabs-Signature header is not t=<unix seconds>,v0=<hex HMAC-SHA256>")]
    Malformed,
    #[error("the ElevenLabs-Signature does not match the body")]
    Mismatch,
    #[error(
        "the ElevenLabs-Signature timestamp is {skew_secs} s from now, beyond the {tolerance_secs} s tolerance"
    )]
    OutsideTolerance { skew_secs: i64, tolerance_secs: u64 },
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value ElevenLabs sends for `body` at `timestamp` (for tests and local tools).
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v0={}", hex::encode(digest))
}

/// Checks the `ElevenLabs-Signature` header against the raw body: the HMAC in constant time,
/// then the timestamp against `tolerance_secs` around `now` (unix seconds).
pub fn verify_signature(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() => timestamp = Some(t.trim()),
            Some(("v0", hex)) => candidates.push(hex.trim()),
            // Unknown schemes are ignored, so a future v1 does not break verification.
            Some((_, _)) if !part.trim().starts_with("t=") => {}
            _ => return Err(SignatureError::Malformed),
        }
    }
    let text = timestamp.ok_or(SignatureError::Malformed)?;
    let t: i64 = text.parse().map_err(|_| SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = mac(secret, text, body);
    let matches = candidates.iter().any(|candidate| {
        hex::decode(candidate).is_ok_and(|bytes| expected.clone().verify_slice(&bytes).is_ok())
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let skew_secs = now.saturating_sub(t);
    if skew_secs.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance {
            skew_secs,
            tolerance_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wsec_test_0123456789";
    const NOW: i64 = 1_739_537_297;

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // Computed independently with Python:
        // hmac.new(b"wsec_test_0123456789", b"1739537297." + body, hashlib.sha256).hexdigest()
        let body = br#"{"type":"post_call_transcription","data":{}}"#;
        assert_eq!(
            signature_header(SECRET, NOW, body),
            "t=1739537297,v0=c166c9978ae5e48fa20f40ae6c7e9620c63d3c86249b9edddcfbc81e710e7e23"
        );
    }

    #[test]
    fn a_signed_body_verifies_within_the_tolerance_either_way() {
        let body = b"{}";
        let header = signature_header(SECRET, NOW, body);
        for now in [NOW, NOW + 1800, NOW - 1800] {
            assert_eq!(
                verify_signature(SECRET, Some(&header), body, now, 1800),
                Ok(())
            );
        }
        assert_eq!(
            verify_signature(SECRET, Some(&header), body, NOW + 1801, 1800),
            Err(SignatureError::OutsideTolerance {
                skew_secs: 1801,
                tolerance_secs: 1800
            })
        );
        assert_eq!(
            verify_signature(SECRET, Some(&header), body, NOW - 1801, 1800),
            Err(SignatureError::OutsideTolerance {
                skew_secs: -1801,
                tolerance_secs: 1800
            })
        );
    }

    #[test]
    fn a_changed_body_secret_or_timestamp_does_not_verify() {
        let header = signature_header(SECRET, NOW, b"{\"a\":1}");
        let check = |secret: &str, header: &str, body: &[u8]| {
            verify_signature(secret, Some(header), body, NOW, 1800)
        };
        assert_eq!(
            check(SECRET, &header, b"{\"a\":2}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check("another", &header, b"{\"a\":1}"),
            Err(SignatureError::Mismatch)
        );
        let moved = header.replace("t=1739537297", "t=1739537298");
        assert_eq!(
            check(SECRET, &moved, b"{\"a\":1}"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_missing_or_malformed_header_is_refused() {
        let body = b"{}";
        let v0 = signature_header(SECRET, NOW, body);
        assert_eq!(
            verify_signature(SECRET, None, body, NOW, 1800),
            Err(SignatureError::Missing)
        );
        for header in [
            "",
            "garbage",
            "t=,v0=00",
            "t=soon,v0=00",
            "t=1739537297",
            "v0=00",
        ] {
            assert_eq!(
                verify_signature(SECRET, Some(header), body, NOW, 1800),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
        assert_eq!(
            verify_signature(SECRET, Some("t=1739537297,v0=zz"), body, NOW, 1800),
            Err(SignatureError::Mismatch),
            "a v0 that is not hex matches nothing"
        );
        // Spaces after the commas are tolerated, as is an unknown scheme next to v0.
        let spaced = v0.replace(',', ", ") + ", v1=abc";
        assert_eq!(
            verify_signature(SECRET, Some(&spaced), body, NOW, 1800),
            Ok(())
        );
    }
}
