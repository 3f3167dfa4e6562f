//! Authentication and authorization, as pure functions: AWS Signature Version 4
//! verification of a request's parts and IAM-style policy evaluation. No I/O, no async.
//!
//! It knows nothing of HTTP servers, gRPC, storage or where keys are kept: callers pass the
//! request's parts and a lookup of secrets. Entry points: [`sigv4`] and [`policy`].

pub mod policy;
pub mod sigv4;
mod time;
pub mod token;

pub use time::format_amz_date;

/// A fresh access key id (`AKIA` + 16 characters, as AWS shapes them) and a 40-character
/// secret, both from the system's secure random source.
pub fn new_access_key() -> (String, String) {
    use ring::rand::SecureRandom;
    const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET_ALPHABET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let rng = ring::rand::SystemRandom::new();
    let mut bytes = [0u8; 56];
    // Without the system's random source there is no safe key to hand out.
    rng.fill(&mut bytes)
        .expect("the operating system's random source is available");
    let id: String = bytes[..16]
        .iter()
        .map(|b| ID_ALPHABET[usize::from(*b) % 32] as char)
        .collect();
    let secret: String = bytes[16..]
        .iter()
        .map(|b| SECRET_ALPHABET[usize::from(*b) % 64] as char)
        .collect();
    (format!("AKIA{id}"), secret)
}
