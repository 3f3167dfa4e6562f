//! AWS Signature Version 4 verification.
//!
//! The caller hands over the parts of a request as they arrived ([`RequestParts`]), the
//! current time, the region and service the node answers for, and a way to find an access
//! key's secret. [`verify`] rebuilds the canonical request exactly as the AWS SDKs build it,
//! derives the signing key, and compares signatures in constant time. It accepts the
//! `Authorization` header and presigned query parameters; the payload may be signed (its
//! SHA-256 in `x-amz-content-sha256`, or absent and then computed here), `UNSIGNED-PAYLOAD`,
//! or `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (aws-chunked, each chunk signature checked and
//! the body decoded).
//!
//! Error types and messages follow AWS's JSON services.

use crate::time;
use ring::hmac;
use std::borrow::Cow;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// How far a request's date may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;
/// The longest a presigned request may stay valid (7 days, as AWS allows).
const MAX_PRESIGNED_EXPIRES_SECS: i64 = 7 * 24 * 3600;

/// Why a request's signature was refused; each maps to one AWS error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// `MissingAuthenticationTokenException`
    #[error("{0}")]
    MissingAuthenticationToken(String),
    /// `IncompleteSignatureException`
    #[error("{0}")]
    IncompleteSignature(String),
    /// `InvalidSignatureException`
    #[error("{0}")]
    InvalidSignature(String),
    /// `UnrecognizedClientException`
    #[error("{0}")]
    UnrecognizedClient(String),
}

/// The parts of an HTTP request that take part in its signature.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as sent on the wire (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// The authority of the request URI (HTTP/2 `:authority`), used when there is no
    /// `Host` header.
    pub authority: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// Who signed a verified request, and the body to process (decoded when it was
/// aws-chunked).
#[derive(Debug)]
pub struct Verified<'a> {
    pub access_key_id: String,
    pub body: Cow<'a, [u8]>,
}

/// Checks a request's SigV4 signature. `secret_of` returns an access key's secret, or
/// `None` for an unknown key. `now_secs` is the server's clock (Unix seconds).
pub fn verify<'a>(
    request: &RequestParts<'a>,
    region: &str,
    service: &str,
    now_secs: i64,
    secret_of: impl FnOnce(&str) -> Option<String>,
) -> Result<Verified<'a>, SigV4Error> {
    let query = parse_query(request.query);
    let has_header = request.headers.contains_key(http::header::AUTHORIZATION);
    let has_query = query.iter().any(|(k, _)| k == "X-Amz-Algorithm");
    let auth = match (has_header, has_query) {
        (true, true) => {
            return Err(SigV4Error::InvalidSignature(
                "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.".into(),
            ));
        }
        (false, false) => {
            return Err(SigV4Error::MissingAuthenticationToken(
                "Missing Authentication Token".into(),
            ));
        }
        (true, false) => header_auth(request)?,
        (false, true) => query_auth(&query)?,
    };

    let scope: Vec<&str> = auth.credential.split('/').collect();
    if scope.len() != 5 {
        return Err(SigV4Error::IncompleteSignature(format!(
            "Credential should be scoped to a valid region, not '{}'. Authorization header has an invalid Credential: '{}'.",
            scope.get(2).copied().unwrap_or(""),
            auth.credential
        )));
    }
    let (access_key_id, scope_date, scope_region, scope_service, terminator) =
        (scope[0], scope[1], scope[2], scope[3], scope[4]);
    if terminator != "aws4_request" {
        return Err(SigV4Error::InvalidSignature(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'. "
        )));
    }
    if scope_service != service {
        return Err(SigV4Error::InvalidSignature(format!(
            "Credential should be scoped to correct service: '{service}'. "
        )));
    }
    if scope_region != region {
        return Err(SigV4Error::InvalidSignature(format!(
            "Credential should be scoped to a valid region, not '{scope_region}'. "
        )));
    }

    let request_secs = time::parse_amz_date(&auth.date).ok_or_else(|| {
        SigV4Error::IncompleteSignature(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'. See http://en.wikipedia.org/wiki/ISO_8601",
            auth.date
        ))
    })?;
    if !auth.date.starts_with(scope_date) || scope_date.len() != 8 {
        return Err(SigV4Error::InvalidSignature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{scope_date}' != '{}', from '{}'.",
            &auth.date[..8.min(auth.date.len())],
            auth.date
        )));
    }
    match auth.expires_secs {
        None => check_skew(&auth.date, request_secs, now_secs)?,
        Some(expires) => {
            if now_secs > request_secs.saturating_add(expires) {
                return Err(SigV4Error::InvalidSignature(format!(
                    "Signature expired: {} is now earlier than {} ({} - {expires} sec.)",
                    time::format_amz_date(request_secs.saturating_add(expires)),
                    time::format_amz_date(now_secs),
                    time::format_amz_date(now_secs),
                )));
            }
            if request_secs > now_secs + MAX_SKEW_SECS {
                check_skew(&auth.date, request_secs, now_secs)?;
            }
        }
    }

    let signed: Vec<String> = auth
        .signed_headers
        .split(';')
        .map(str::to_ascii_lowercase)
        .collect();
    if !signed.iter().any(|h| h == "host" || h == ":authority") {
        return Err(SigV4Error::InvalidSignature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }

    let Some(secret) = secret_of(access_key_id) else {
        return Err(SigV4Error::UnrecognizedClient(
            "The security token included in the request is invalid.".into(),
        ));
    };

    // The payload hash the signature covers.
    let declared = request
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let body_hash = || hex::encode(ring::digest::digest(&ring::digest::SHA256, request.body));
    let payload_hash = match declared {
        Some(UNSIGNED_PAYLOAD) => UNSIGNED_PAYLOAD.to_owned(),
        Some(STREAMING_PAYLOAD) => STREAMING_PAYLOAD.to_owned(),
        Some(hash) => {
            if !hash.eq_ignore_ascii_case(&body_hash()) {
                return Err(SigV4Error::InvalidSignature(
                    "The provided 'x-amz-content-sha256' header does not match what was computed."
                        .into(),
                ));
            }
            hash.to_ascii_lowercase()
        }
        None => body_hash(),
    };

    let canonical = canonical_request(request, &query, &signed, &payload_hash)?;
    let scope_text = format!("{scope_date}/{scope_region}/{scope_service}/aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope_text}\n{}",
        auth.date,
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes()
        ))
    );
    let key = signing_key(&secret, scope_date, scope_region, scope_service);
    let expected = hmac::sign(&key, string_to_sign.as_bytes());
    if !signature_matches(expected.as_ref(), &auth.signature) {
        return Err(SigV4Error::InvalidSignature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into(),
        ));
    }

    let body = if payload_hash == STREAMING_PAYLOAD {
        Cow::Owned(decode_chunked(
            request.body,
            &key,
            &auth.date,
            &scope_text,
            &auth.signature,
        )?)
    } else {
        Cow::Borrowed(request.body)
    };
    Ok(Verified {
        access_key_id: access_key_id.to_owned(),
        body,
    })
}

/// Signs a request as the AWS SDKs do: answers the `Authorization` and `X-Amz-Date`
/// header values. `headers` are the other headers to sign (names in any case); `host` is
/// always signed.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    now_secs: i64,
) -> (String, String) {
    let date = time::format_amz_date(now_secs);
    let mut map = http::HeaderMap::new();
    let mut signed: Vec<String> = vec!["host".into(), "x-amz-date".into()];
    if let Ok(value) = http::HeaderValue::from_str(host) {
        map.insert(http::header::HOST, value);
    }
    if let Ok(value) = http::HeaderValue::from_str(&date) {
        map.insert("x-amz-date", value);
    }
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            signed.push(name.as_str().to_owned());
            map.append(name, value);
        }
    }
    signed.sort();
    signed.dedup();
    let parts = RequestParts {
        method,
        path,
        query: "",
        authority: Some(host),
        headers: &map,
        body,
    };
    let payload_hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, body));
    // Every signed header is present, so building the canonical request cannot fail.
    let canonical = canonical_request(&parts, &[], &signed, &payload_hash).unwrap_or_default();
    let day = &date[..8];
    let scope = format!("{day}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{date}\n{scope}\n{}",
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes()
        ))
    );
    let key = signing_key(secret, day, region, service);
    let signature = hex::encode(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    (
        format!(
            "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={signature}",
            signed.join(";")
        ),
        date,
    )
}

fn check_skew(date: &str, request_secs: i64, now_secs: i64) -> Result<(), SigV4Error> {
    let now = time::format_amz_date(now_secs);
    if request_secs < now_secs - MAX_SKEW_SECS {
        return Err(SigV4Error::InvalidSignature(format!(
            "Signature expired: {date} is now earlier than {} ({now} - 15 min.)",
            time::format_amz_date(now_secs - MAX_SKEW_SECS)
        )));
    }
    if request_secs > now_secs + MAX_SKEW_SECS {
        return Err(SigV4Error::InvalidSignature(format!(
            "Signature not yet current: {date} is still later than {} ({now} + 15 min.)",
            time::format_amz_date(now_secs + MAX_SKEW_SECS)
        )));
    }
    Ok(())
}

/// The signature parameters, from the header or the query string.
struct AuthParams {
    credential: String,
    signed_headers: String,
    signature: String,
    /// `X-Amz-Date` in basic ISO-8601 (`Date` headers are converted).
    date: String,
    /// Presigned requests only.
    expires_secs: Option<i64>,
}

fn header_auth(request: &RequestParts<'_>) -> Result<AuthParams, SigV4Error> {
    let header = request
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    let (algorithm, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let value = (!value.is_empty()).then(|| value.trim().to_owned());
        match key.trim() {
            "Credential" => credential = value,
            "SignedHeaders" => signed_headers = value,
            "Signature" => signature = value,
            _ => {}
        }
    }
    let date = request
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .map(|d| d.trim().to_owned())
        .or_else(|| {
            request
                .headers
                .get(http::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|d| time::parse_http_date(d.trim()))
                .map(time::format_amz_date)
        });
    let mut message = String::new();
    if algorithm != ALGORITHM {
        return Err(SigV4Error::IncompleteSignature(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'. Authorization={header}"
        )));
    }
    for (name, value) in [
        ("Credential", &credential),
        ("Signature", &signature),
        ("SignedHeaders", &signed_headers),
    ] {
        if value.is_none() {
            message.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    if date.is_none() {
        message.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
        );
    }
    match (credential, signed_headers, signature, date) {
        (Some(credential), Some(signed_headers), Some(signature), Some(date))
            if message.is_empty() =>
        {
            Ok(AuthParams {
                credential,
                signed_headers,
                signature,
                date,
                expires_secs: None,
            })
        }
        _ => Err(SigV4Error::IncompleteSignature(format!(
            "{message}Authorization={header}"
        ))),
    }
}

fn query_auth(query: &[(String, String)]) -> Result<AuthParams, SigV4Error> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let mut message = String::new();
    for name in [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
    ] {
        if get(name).is_none() {
            message.push_str(&format!(
                "AWS query-string parameters must include '{name}'. "
            ));
        }
    }
    if !message.is_empty() {
        message.push_str("Re-examine the query-string parameters.");
        return Err(SigV4Error::IncompleteSignature(message));
    }
    let algorithm = get("X-Amz-Algorithm").unwrap_or_default();
    if algorithm != ALGORITHM {
        return Err(SigV4Error::IncompleteSignature(format!(
            "X-Amz-Algorithm only supports \"{ALGORITHM}\""
        )));
    }
    let expires_secs = match get("X-Amz-Expires") {
        None => MAX_PRESIGNED_EXPIRES_SECS,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (0..=MAX_PRESIGNED_EXPIRES_SECS).contains(&n) => n,
            _ => {
                return Err(SigV4Error::IncompleteSignature(format!(
                    "X-Amz-Expires must be a number between 0 and {MAX_PRESIGNED_EXPIRES_SECS} seconds, not '{text}'."
                )));
            }
        },
    };
    Ok(AuthParams {
        credential: get("X-Amz-Credential").unwrap_or_default(),
        signed_headers: get("X-Amz-SignedHeaders").unwrap_or_default(),
        signature: get("X-Amz-Signature").unwrap_or_default(),
        date: get("X-Amz-Date").unwrap_or_default(),
        expires_secs: Some(expires_secs),
    })
}

/// Decoded query pairs in arrival order.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2]))
        {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        // `+` stays a plus: SigV4 clients encode spaces as %20.
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// RFC 3986 encoding of everything but the unreserved characters (and `/` when asked).
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && byte == b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The canonical URI of a non-S3 service: the normalized wire path, each segment encoded
/// once more (the SDKs double-encode).
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut uri = String::from("/");
    uri.push_str(
        &segments
            .iter()
            .map(|s| uri_encode(s, false))
            .collect::<Vec<_>>()
            .join("/"),
    );
    if path.ends_with('/') && !segments.is_empty() {
        uri.push('/');
    }
    uri
}

fn canonical_request(
    request: &RequestParts<'_>,
    query: &[(String, String)],
    signed: &[String],
    payload_hash: &str,
) -> Result<String, SigV4Error> {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    let canonical_query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers = String::new();
    for name in signed {
        let values: Vec<String> = request
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(collapse_spaces)
            .collect();
        let value = if values.is_empty() && (name == "host" || name == ":authority") {
            request.authority.map(collapse_spaces)
        } else if values.is_empty() {
            None
        } else {
            Some(values.join(","))
        };
        let Some(value) = value else {
            return Err(SigV4Error::InvalidSignature(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into(),
            ));
        };
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&value);
        headers.push('\n');
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_uri(request.path),
        canonical_query,
        headers,
        signed.join(";"),
        payload_hash
    ))
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut key = hmac::Key::new(hmac::HMAC_SHA256, format!("AWS4{secret}").as_bytes());
    for part in [date, region, service, "aws4_request"] {
        let tag = hmac::sign(&key, part.as_bytes());
        key = hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref());
    }
    key
}

/// Constant-time comparison of a computed signature with the hex one received.
pub(crate) fn signature_matches(expected: &[u8], received_hex: &str) -> bool {
    let Ok(received) = hex::decode(received_hex.trim()) else {
        return false;
    };
    // Every byte is compared whatever the earlier ones were, so timing reveals nothing.
    expected.len() == received.len()
        && expected
            .iter()
            .zip(&received)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Decodes an aws-chunked body, checking each chunk's signature against the chain that
/// starts at the request's seed signature.
fn decode_chunked(
    body: &[u8],
    key: &hmac::Key,
    date: &str,
    scope: &str,
    seed_signature: &str,
) -> Result<Vec<u8>, SigV4Error> {
    let bad =
        |what: &str| SigV4Error::IncompleteSignature(format!("Invalid aws-chunked body: {what}."));
    let empty_hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, b""));
    let mut previous = seed_signature.to_ascii_lowercase();
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("missing chunk header"))?;
        let header = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("chunk header"))?;
        let (size_hex, signature) = header
            .split_once(";chunk-signature=")
            .ok_or_else(|| bad("missing chunk-signature"))?;
        let size = usize::from_str_radix(size_hex.trim(), 16).map_err(|_| bad("chunk size"))?;
        rest = &rest[line_end + 2..];
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err(bad("truncated chunk"));
        }
        let data = &rest[..size];
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{date}\n{scope}\n{previous}\n{empty_hash}\n{}",
            hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
        );
        let expected = hmac::sign(key, string_to_sign.as_bytes());
        if !signature_matches(expected.as_ref(), signature) {
            return Err(SigV4Error::InvalidSignature(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into(),
            ));
        }
        previous = signature.trim().to_ascii_lowercase();
        out.extend_from_slice(data);
        rest = &rest[size + 2..];
        if size == 0 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests;
