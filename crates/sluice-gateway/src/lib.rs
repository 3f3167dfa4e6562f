//! The Kinesis HTTP front end: parses `X-Amz-Target` into an [`Operation`], decodes JSON
//! 1.1 and CBOR 1.1 bodies into one value tree, checks them against the AWS service model
//! (AWS-style validation messages), calls the `Broker`, and maps every error to its
//! `__type` and HTTP status in one place.
//!
//! It knows nothing of sled, openraft or segment files. Entry function: [`router`].

mod auth;
mod endpoint;
pub mod error;
pub mod eventstream;
pub mod metrics;
pub mod model;
mod ops;
mod subscribe;
pub mod validate;
pub mod value;

pub use auth::Authentication;
pub use endpoint::router;
pub use error::{ApiError, ErrorKind};
pub use metrics::GatewayMetrics;
pub use ops::Operation;
