//! StartStreamEncryption and StopStreamEncryption.

use super::*;

pub(super) async fn start(_broker: &Broker, _input: &Value) -> Result<Value, ApiError> {
    Err(ApiError::new(
        ErrorKind::InternalFailure,
        "Internal service failure.",
    ))
}

pub(super) async fn stop(_broker: &Broker, _input: &Value) -> Result<Value, ApiError> {
    Err(ApiError::new(
        ErrorKind::InternalFailure,
        "Internal service failure.",
    ))
}
