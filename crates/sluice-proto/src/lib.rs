//! Code generated from `proto/`: the public `sluice.v1` API messages and tonic services, and
//! `sluice.peer.v1`, the node-to-node service of a cluster.
//!
//! Business rules, storage and the Kinesis wire formats live elsewhere. Entry module:
//! [`v1`], [`peer`].

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}

/// Node-to-node calls (`proto/sluice/peer/v1/peer.proto`).
#[allow(clippy::all, missing_docs)]
pub mod peer {
    tonic::include_proto!("sluice.peer.v1");
}
