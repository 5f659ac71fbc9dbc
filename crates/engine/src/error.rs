use buildr_core::FieldError;

/// What an engine call can fail with. The API maps each kind to its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Start-up replay is still running.
    #[error("the service is starting up (replaying its log)")]
    NotReady,
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A value that is well-formed but refused (e.g. a private target address).
    #[error("{0}")]
    Unprocessable(FieldError),
    /// A value that breaks a field rule.
    #[error("{0}")]
    Invalid(FieldError),
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyConflict,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the engine has stopped")]
    Stopped,
    /// A derived index did not catch up with the log in time (a read would miss acknowledged writes).
    #[error("{0}")]
    IndexBehind(#[from] crate::indexer::IndexBehind),
}

impl From<buildr_log::LogError> for EngineError {
    fn from(e: buildr_log::LogError) -> Self {
        EngineError::Storage(e.to_string())
    }
}
