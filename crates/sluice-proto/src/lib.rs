//! Code generated from `proto/`: the public `sluice.v1` API messages and tonic services.
//!
//! Business rules, storage and the Kinesis wire formats live elsewhere. Entry module:
//! [`v1`].

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}
