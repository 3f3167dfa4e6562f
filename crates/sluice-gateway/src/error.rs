//! The Kinesis error vocabulary and its single mapping to the wire (`__type` + HTTP status).

use http::StatusCode;

/// Every error type the Kinesis endpoint can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    ResourceNotFound,
    ResourceInUse,
    Validation,
    InvalidArgument,
    ExpiredIterator,
    ExpiredNextToken,
    ProvisionedThroughputExceeded,
    LimitExceeded,
    AccessDenied,
    Serialization,
    UnknownOperation,
    MissingAction,
    InternalFailure,
    KmsNotFound,
    KmsDisabled,
    KmsInvalidState,
    KmsAccessDenied,
    MissingAuthenticationToken,
    IncompleteSignature,
    UnrecognizedClient,
    InvalidSignature,
}

impl ErrorKind {
    /// The `__type` AWS puts in the error body.
    pub fn aws_type(self) -> &'static str {
        match self {
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::ResourceInUse => "ResourceInUseException",
            ErrorKind::Validation => "ValidationException",
            ErrorKind::InvalidArgument => "InvalidArgumentException",
            ErrorKind::ExpiredIterator => "ExpiredIteratorException",
            ErrorKind::ExpiredNextToken => "ExpiredNextTokenException",
            ErrorKind::ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
            ErrorKind::LimitExceeded => "LimitExceededException",
            ErrorKind::AccessDenied => "AccessDeniedException",
            ErrorKind::Serialization => "SerializationException",
            ErrorKind::UnknownOperation => "UnknownOperationException",
            ErrorKind::MissingAction => "MissingAction",
            ErrorKind::InternalFailure => "InternalFailure",
            ErrorKind::KmsNotFound => "KMSNotFoundException",
            ErrorKind::KmsDisabled => "KMSDisabledException",
            ErrorKind::KmsInvalidState => "KMSInvalidStateException",
            ErrorKind::KmsAccessDenied => "KMSAccessDeniedException",
            ErrorKind::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorKind::IncompleteSignature => "IncompleteSignatureException",
            ErrorKind::UnrecognizedClient => "UnrecognizedClientException",
            ErrorKind::InvalidSignature => "InvalidSignatureException",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InternalFailure => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error answered to a Kinesis client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Serialization, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
}
