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
    /// runc failed starting a process; worded as containerd's Go shim words it
    /// ("OCI runtime create failed: ...") because users and tools match on it.
    #[error("OCI runtime {op} failed: {message}")]
    Runtime {
        op: &'static str,
        message: String,
        timed_out: bool,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A runc failure of a process-starting operation (create, start, exec).
    pub fn runtime(op: &'static str, e: runc_wrapper::Error) -> Error {
        let timed_out = matches!(e, runc_wrapper::Error::Timeout { .. });
        let message = match e {
            runc_wrapper::Error::Failed { message, .. } => message,
            other => other.to_string(),
        };
        Error::Runtime {
            op,
            message,
            timed_out,
        }
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
            Error::Runtime {
                timed_out: true, ..
            } => Code::DEADLINE_EXCEEDED,
            Error::Runtime { .. } => Code::UNKNOWN,
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
        assert_eq!(
            Error::AlreadyExists("x".into()).code(),
            Code::ALREADY_EXISTS
        );
        let timeout = runc_wrapper::Error::Timeout {
            command: "runc start".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(Error::from(timeout).code(), Code::DEADLINE_EXCEEDED);
        match ttrpc::Error::from(Error::FailedPrecondition("paused".into())) {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::FAILED_PRECONDITION);
                assert_eq!(s.message(), "paused");
            }
            other => panic!("unexpected {other:?}"),
        }
        let failed = runc_wrapper::Error::Failed {
            command: "runc create".into(),
            status: 1,
            message: "exec: \"sh\": not found".into(),
        };
        let e = Error::runtime("create", failed);
        assert_eq!(
            e.to_string(),
            "OCI runtime create failed: exec: \"sh\": not found"
        );
        assert_eq!(e.code(), Code::UNKNOWN);
    }
}
