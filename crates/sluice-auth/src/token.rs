//! The credential check of the gRPC API: an `authorization` metadata value that proves
//! possession of an access key's secret without sending it, bound to the method called and
//! to a time (the same 15-minute window as SigV4).
//!
//! ```text
//! SLUICE1-HMAC-SHA256 Credential=<access key id>, Date=<YYYYMMDDTHHMMSSZ>, Signature=<hex>
//! Signature = HMAC-SHA256(SigV4 signing key(secret, YYYYMMDD, "sluice", "grpc"),
//!                         "SLUICE1-HMAC-SHA256\n" + Date + "\n" + method path)
//! ```

use crate::sigv4::{MAX_SKEW_SECS, SigV4Error, signature_matches, signing_key};
use crate::time;
use ring::hmac;

pub const SCHEME: &str = "SLUICE1-HMAC-SHA256";

fn string_to_sign(date: &str, path: &str) -> String {
    format!("{SCHEME}\n{date}\n{path}")
}

fn key(secret: &str, date: &str) -> hmac::Key {
    signing_key(secret, &date[..8.min(date.len())], "sluice", "grpc")
}

/// The `authorization` value for a call of `path` (e.g. `/sluice.v1.Streams/CreateStream`).
pub fn sign(access_key_id: &str, secret: &str, path: &str, now_secs: i64) -> String {
    let date = time::format_amz_date(now_secs);
    let signature = hmac::sign(&key(secret, &date), string_to_sign(&date, path).as_bytes());
    format!(
        "{SCHEME} Credential={access_key_id}, Date={date}, Signature={}",
        hex::encode(signature.as_ref())
    )
}

/// Checks an `authorization` value; answers the access key id that signed it.
pub fn verify(
    header: Option<&str>,
    path: &str,
    now_secs: i64,
    secret_of: impl FnOnce(&str) -> Option<String>,
) -> Result<String, SigV4Error> {
    let Some(header) = header else {
        return Err(SigV4Error::MissingAuthenticationToken(
            "Missing Authentication Token".into(),
        ));
    };
    let rest = header
        .strip_prefix(SCHEME)
        .map(str::trim_start)
        .ok_or_else(|| {
            SigV4Error::IncompleteSignature(format!("Authorization must use the {SCHEME} scheme."))
        })?;
    let mut credential = None;
    let mut date = None;
    let mut signature = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v.trim()),
            Some(("Date", v)) => date = Some(v.trim()),
            Some(("Signature", v)) => signature = Some(v.trim()),
            _ => {}
        }
    }
    let (Some(credential), Some(date), Some(signature)) = (credential, date, signature) else {
        return Err(SigV4Error::IncompleteSignature(
            "Authorization requires Credential, Date and Signature parameters.".into(),
        ));
    };
    let request_secs = time::parse_amz_date(date).ok_or_else(|| {
        SigV4Error::IncompleteSignature(format!(
            "Date must be in ISO-8601 'basic format'. Got '{date}'."
        ))
    })?;
    if (request_secs - now_secs).abs() > MAX_SKEW_SECS {
        return Err(SigV4Error::InvalidSignature(format!(
            "Signature expired or not yet current: {date} is more than 15 minutes from {}.",
            time::format_amz_date(now_secs)
        )));
    }
    let Some(secret) = secret_of(credential) else {
        return Err(SigV4Error::UnrecognizedClient(
            "The security token included in the request is invalid.".into(),
        ));
    };
    let expected = hmac::sign(&key(&secret, date), string_to_sign(date, path).as_bytes());
    if !signature_matches(expected.as_ref(), signature) {
        return Err(SigV4Error::InvalidSignature(
            "The request signature we calculated does not match the signature you provided. Check your secret access key.".into(),
        ));
    }
    Ok(credential.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/sluice.v1.Streams/CreateStream";
    const NOW: i64 = 1_732_796_400;

    fn secret_of(id: &str) -> Option<String> {
        (id == "AKIDTEST").then(|| "secret-secret-secret".to_owned())
    }

    #[test]
    fn a_signed_call_verifies_and_names_its_key() {
        let header = sign("AKIDTEST", "secret-secret-secret", PATH, NOW);
        assert_eq!(
            verify(Some(&header), PATH, NOW + 60, secret_of).unwrap(),
            "AKIDTEST"
        );
    }

    #[test]
    fn wrong_secret_method_time_or_key_are_refused() {
        let wrong_secret = sign("AKIDTEST", "another-secret-value", PATH, NOW);
        assert!(matches!(
            verify(Some(&wrong_secret), PATH, NOW, secret_of),
            Err(SigV4Error::InvalidSignature(_))
        ));
        let header = sign("AKIDTEST", "secret-secret-secret", PATH, NOW);
        assert!(matches!(
            verify(
                Some(&header),
                "/sluice.v1.Streams/DeleteStream",
                NOW,
                secret_of
            ),
            Err(SigV4Error::InvalidSignature(_))
        ));
        assert!(matches!(
            verify(Some(&header), PATH, NOW + 16 * 60, secret_of),
            Err(SigV4Error::InvalidSignature(_))
        ));
        let unknown = sign("AKIDOTHER", "secret-secret-secret", PATH, NOW);
        assert!(matches!(
            verify(Some(&unknown), PATH, NOW, secret_of),
            Err(SigV4Error::UnrecognizedClient(_))
        ));
        assert!(matches!(
            verify(None, PATH, NOW, secret_of),
            Err(SigV4Error::MissingAuthenticationToken(_))
        ));
        assert!(matches!(
            verify(Some("Bearer xyz"), PATH, NOW, secret_of),
            Err(SigV4Error::IncompleteSignature(_))
        ));
    }
}
