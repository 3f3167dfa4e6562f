//! Authentication and authorization, as pure functions: AWS Signature Version 4
//! verification of a request's parts and IAM-style policy evaluation. No I/O, no async.
//!
//! It knows nothing of HTTP servers, gRPC, storage or where keys are kept: callers pass the
//! request's parts and a lookup of secrets. Entry points: [`sigv4`] and [`policy`].
