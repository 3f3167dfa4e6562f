//! Requests signed by the AWS SDK's own signer (aws-sigv4) must verify; every tampering
//! must be refused with AWS's error type.

use super::*;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2015-08-30T12:36:00Z
const NOW: i64 = 1_440_938_160;
const BODY: &[u8] = br#"{"StreamName":"orders"}"#;

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

/// Builds a Kinesis-shaped request and signs it with aws-sigv4.
fn signed_request(
    secret: &str,
    region: &str,
    time: SystemTime,
    body: SignableBody<'_>,
    settings: SigningSettings,
) -> http::Request<Vec<u8>> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri("http://127.0.0.1:4567/")
        .header("host", "127.0.0.1:4567")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "Kinesis_20131202.DescribeStream")
        .body(BODY.to_vec())
        .unwrap();
    let identity = Credentials::new(KEY_ID, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kinesis")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let signable = SignableRequest::new(
        "POST",
        request.uri().to_string(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut request);
    request
}

fn check(request: &http::Request<Vec<u8>>, now: i64) -> Result<Verified<'_>, SigV4Error> {
    let parts = RequestParts {
        method: request.method().as_str(),
        path: request.uri().path(),
        query: request.uri().query().unwrap_or(""),
        authority: request.uri().authority().map(|a| a.as_str()),
        headers: request.headers(),
        body: request.body(),
    };
    verify(&parts, "us-east-1", "kinesis", now, |id| {
        (id == KEY_ID).then(|| SECRET.to_owned())
    })
}

fn default_signed() -> http::Request<Vec<u8>> {
    signed_request(
        SECRET,
        "us-east-1",
        at(NOW),
        SignableBody::Bytes(BODY),
        SigningSettings::default(),
    )
}

#[test]
fn a_request_signed_by_the_sdk_signer_verifies() {
    let request = default_signed();
    let verified = check(&request, NOW + 60).unwrap();
    assert_eq!(verified.access_key_id, KEY_ID);
    assert_eq!(&*verified.body, BODY);
}

#[test]
fn the_aws_get_vanilla_test_vector_verifies() {
    // From the AWS Signature Version 4 test suite ("get-vanilla").
    let request = http::Request::builder()
        .method("GET")
        .uri("/")
        .header("host", "example.amazonaws.com")
        .header("x-amz-date", "20150830T123600Z")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .body(Vec::<u8>::new())
        .unwrap();
    let parts = RequestParts {
        method: "GET",
        path: "/",
        query: "",
        authority: None,
        headers: request.headers(),
        body: &[],
    };
    let verified = verify(&parts, "us-east-1", "service", NOW, |_| Some(SECRET.into())).unwrap();
    assert_eq!(verified.access_key_id, "AKIDEXAMPLE");
}

#[test]
fn a_wrong_secret_is_an_invalid_signature() {
    let request = signed_request(
        "not-the-secret",
        "us-east-1",
        at(NOW),
        SignableBody::Bytes(BODY),
        SigningSettings::default(),
    );
    let error = check(&request, NOW).unwrap_err();
    assert!(
        matches!(&error, SigV4Error::InvalidSignature(m) if m.starts_with("The request signature we calculated does not match")),
        "{error:?}"
    );
}

#[test]
fn a_tampered_body_is_an_invalid_signature() {
    let mut request = default_signed();
    *request.body_mut() = br#"{"StreamName":"other"}"#.to_vec();
    assert!(matches!(
        check(&request, NOW),
        Err(SigV4Error::InvalidSignature(_))
    ));
}

#[test]
fn a_tampered_signed_header_is_an_invalid_signature() {
    let mut request = default_signed();
    request.headers_mut().insert(
        "x-amz-target",
        http::HeaderValue::from_static("Kinesis_20131202.DeleteStream"),
    );
    assert!(matches!(
        check(&request, NOW),
        Err(SigV4Error::InvalidSignature(_))
    ));
}

#[test]
fn an_unknown_key_is_an_unrecognized_client() {
    let request = default_signed();
    let parts = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        authority: None,
        headers: request.headers(),
        body: request.body(),
    };
    let error = verify(&parts, "us-east-1", "kinesis", NOW, |_| None).unwrap_err();
    assert_eq!(
        error,
        SigV4Error::UnrecognizedClient(
            "The security token included in the request is invalid.".into()
        )
    );
}

#[test]
fn dates_more_than_fifteen_minutes_off_are_refused() {
    let request = default_signed();
    assert!(check(&request, NOW + 15 * 60).is_ok());
    let error = check(&request, NOW + 15 * 60 + 1).unwrap_err();
    assert_eq!(
        error,
        SigV4Error::InvalidSignature(
            "Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z (20150830T125101Z - 15 min.)".into()
        )
    );
    let error = check(&request, NOW - 16 * 60).unwrap_err();
    assert!(
        matches!(&error, SigV4Error::InvalidSignature(m) if m.starts_with("Signature not yet current: 20150830T123600Z is still later than")),
        "{error:?}"
    );
}

#[test]
fn the_scope_must_name_this_region() {
    let request = signed_request(
        SECRET,
        "eu-west-1",
        at(NOW),
        SignableBody::Bytes(BODY),
        SigningSettings::default(),
    );
    assert_eq!(
        check(&request, NOW).unwrap_err(),
        SigV4Error::InvalidSignature(
            "Credential should be scoped to a valid region, not 'eu-west-1'. ".into()
        )
    );
}

#[test]
fn no_signature_at_all_is_a_missing_token() {
    let request = http::Request::builder()
        .method("POST")
        .uri("/")
        .body(BODY.to_vec())
        .unwrap();
    assert_eq!(
        check(&request, NOW).unwrap_err(),
        SigV4Error::MissingAuthenticationToken("Missing Authentication Token".into())
    );
}

#[test]
fn an_incomplete_header_names_what_is_missing() {
    let request = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("authorization", "AWS4-HMAC-SHA256 Signature=abc")
        .body(BODY.to_vec())
        .unwrap();
    assert_eq!(
        check(&request, NOW).unwrap_err(),
        SigV4Error::IncompleteSignature(
            "Authorization header requires 'Credential' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=AWS4-HMAC-SHA256 Signature=abc".into()
        )
    );
}

#[test]
fn unsigned_payloads_verify_and_a_lying_payload_hash_does_not() {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let request = signed_request(
        SECRET,
        "us-east-1",
        at(NOW),
        SignableBody::UnsignedPayload,
        settings.clone(),
    );
    assert_eq!(
        request.headers()["x-amz-content-sha256"],
        "UNSIGNED-PAYLOAD"
    );
    assert!(check(&request, NOW).is_ok());

    let mut request = signed_request(
        SECRET,
        "us-east-1",
        at(NOW),
        SignableBody::Bytes(BODY),
        settings,
    );
    assert!(check(&request, NOW).is_ok());
    *request.body_mut() = b"{}".to_vec();
    assert_eq!(
        check(&request, NOW).unwrap_err(),
        SigV4Error::InvalidSignature(
            "The provided 'x-amz-content-sha256' header does not match what was computed.".into()
        )
    );
}

#[test]
fn presigned_query_parameters_verify_until_they_expire() {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(300));
    let request = signed_request(
        SECRET,
        "us-east-1",
        at(NOW),
        SignableBody::Bytes(BODY),
        settings,
    );
    assert!(request.uri().query().unwrap().contains("X-Amz-Signature="));
    assert!(!request.headers().contains_key("authorization"));
    assert!(check(&request, NOW + 299).is_ok());
    assert!(
        matches!(check(&request, NOW + 301), Err(SigV4Error::InvalidSignature(m)) if m.starts_with("Signature expired"))
    );
}

#[test]
fn aws_chunked_bodies_are_checked_chunk_by_chunk_and_decoded() {
    let chunks: [&[u8]; 3] = [b"{\"StreamName\":", b"\"orders\"}", b""];
    let date = "20150830T123600Z";
    let scope = "20150830/us-east-1/kinesis/aws4_request";
    let key = v4::generate_signing_key(SECRET, at(NOW), "us-east-1", "kinesis");
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "127.0.0.1:4567")
        .header("x-amz-date", date)
        .header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        .header("content-encoding", "aws-chunked")
        .body(Vec::new())
        .unwrap();
    let canonical = format!(
        "POST\n/\n\ncontent-encoding:aws-chunked\nhost:127.0.0.1:4567\nx-amz-content-sha256:STREAMING-AWS4-HMAC-SHA256-PAYLOAD\nx-amz-date:{date}\n\ncontent-encoding;host;x-amz-content-sha256;x-amz-date\nSTREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    );
    let sha = |bytes: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes));
    let seed = v4::calculate_signature(
        key.as_ref(),
        format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            sha(canonical.as_bytes())
        )
        .as_bytes(),
    );
    request.headers_mut().insert(
        "authorization",
        http::HeaderValue::from_str(&format!(
            "AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date, Signature={seed}"
        ))
        .unwrap(),
    );
    let mut previous = seed;
    let mut body = Vec::new();
    for chunk in chunks {
        let signature = v4::calculate_signature(
            key.as_ref(),
            format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{date}\n{scope}\n{previous}\n{}\n{}",
                sha(b""),
                sha(chunk)
            )
            .as_bytes(),
        );
        body.extend_from_slice(
            format!("{:x};chunk-signature={signature}\r\n", chunk.len()).as_bytes(),
        );
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
        previous = signature;
    }
    *request.body_mut() = body.clone();
    let verified = check(&request, NOW).unwrap();
    assert_eq!(&*verified.body, BODY);

    // Flip one byte of the first chunk's data: its signature no longer matches.
    let position = body.windows(2).position(|w| w == b"\r\n").unwrap() + 3;
    body[position] ^= 1;
    *request.body_mut() = body;
    assert!(matches!(
        check(&request, NOW),
        Err(SigV4Error::InvalidSignature(_))
    ));
}

#[test]
fn our_signer_agrees_with_the_sdk_signer_and_verifies() {
    let sdk = default_signed();
    let (authorization, date) = super::sign(
        "POST",
        "/",
        "127.0.0.1:4567",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", "Kinesis_20131202.DescribeStream"),
        ],
        BODY,
        KEY_ID,
        SECRET,
        "us-east-1",
        "kinesis",
        NOW,
    );
    assert_eq!(date, "20150830T123600Z");
    assert_eq!(
        authorization,
        sdk.headers()["authorization"].to_str().unwrap()
    );
    let mut ours = sdk.clone();
    ours.headers_mut().insert(
        "authorization",
        http::HeaderValue::from_str(&authorization).unwrap(),
    );
    assert!(check(&ours, NOW).is_ok());
}
