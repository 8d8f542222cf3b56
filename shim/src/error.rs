//! The shim's error type and its one mapping to ttrpc status codes.

use ttrpc::Code;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Runc(#[from] runc_wrapper::Error),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            Error::ResourceExhausted(_) => Code::RESOURCE_EXHAUSTED,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Unavailable(_) => Code::UNAVAILABLE,
            Error::Runc(runc_wrapper::Error::Timeout { .. }) => Code::DEADLINE_EXCEEDED,
            // containerd's Go shim returns runc failures as plain errors (UNKNOWN on the wire),
            // carrying runc's own message.
            Error::Runc(_) | Error::Internal(_) | Error::Io { .. } => Code::UNKNOWN,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn codes_are_chosen_deliberately() {
        assert_eq!(Error::NotFound("x".into()).code(), Code::NOT_FOUND);
        assert_eq!(Error::AlreadyExists("x".into()).code(), Code::ALREADY_EXISTS);
        let timeout = runc_wrapper::Error::Timeout { command: "runc start".into(), after: Duration::from_secs(1) };
        assert_eq!(Error::from(timeout).code(), Code::DEADLINE_EXCEEDED);
        match ttrpc::Error::from(Error::FailedPrecondition("paused".into())) {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::FAILED_PRECONDITION);
                assert_eq!(s.message(), "paused");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
