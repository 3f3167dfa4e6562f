//! PutResourcePolicy, GetResourcePolicy and DeleteResourcePolicy.

use super::*;

pub(super) async fn put(_broker: &Broker, _input: &Value) -> Result<Value, ApiError> {
    Err(ApiError::new(
        ErrorKind::InternalFailure,
        "Internal service failure.",
    ))
}

pub(super) fn get(_broker: &Broker, _input: &Value) -> Result<Value, ApiError> {
    Err(ApiError::new(
        ErrorKind::InternalFailure,
        "Internal service failure.",
    ))
}

pub(super) async fn delete(_broker: &Broker, _input: &Value) -> Result<Value, ApiError> {
    Err(ApiError::new(
        ErrorKind::InternalFailure,
        "Internal service failure.",
    ))
}
