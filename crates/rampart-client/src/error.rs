//! Client errors. A refusal from the server keeps its stable code.

use std::time::Duration;

use rampart_proto::ErrorCode;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused the request.
    #[error("{code}: {message}")]
    Nack {
        code: ErrorCode,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("connection closed")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The NACK code, if the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Nack { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<rampart_proto::NameError> for ClientError {
    fn from(e: rampart_proto::NameError) -> Self {
        ClientError::InvalidArgument(e.to_string())
    }
}
