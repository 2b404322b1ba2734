//! [`EngineError`]: why a call to dockerd failed, naming the socket and the call.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A failed call to the Docker Engine API. Every variant names the API socket and the call
/// (`GET /containers/json`); a refusal carries dockerd's own message verbatim.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The socket could not be connected to: dockerd is not running, or not there.
    #[error("{call} on the Docker API at {}: cannot connect", socket.display())]
    Connect {
        /// The Docker API socket.
        socket: PathBuf,
        /// The call, as `METHOD /path`.
        call: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange broke (dockerd closed the connection, or spoke no HTTP).
    #[error("{call} on the Docker API at {}: the HTTP exchange failed", socket.display())]
    Http {
        /// The Docker API socket.
        socket: PathBuf,
        /// The call, as `METHOD /path`.
        call: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// dockerd did not answer in time.
    #[error("{call} on the Docker API at {}: no answer within {after:?}", socket.display())]
    Timeout {
        /// The Docker API socket.
        socket: PathBuf,
        /// The call, as `METHOD /path`.
        call: String,
        /// How long the call was given.
        after: Duration,
    },
    /// The response (or one line of the events stream) was longer than the agent accepts.
    #[error("{call} on the Docker API at {}: the response is over {limit} bytes", socket.display())]
    TooLarge {
        /// The Docker API socket.
        socket: PathBuf,
        /// The call, as `METHOD /path`.
        call: String,
        /// The cap, in bytes.
        limit: usize,
    },
    /// dockerd answered with an error status.
    #[error(
        "{call} on the Docker API at {}: dockerd refused (HTTP {status}): {message}",
        socket.display()
    )]
    Refused {
        /// The Docker API socket.
        socket: PathBuf,
        /// The call, as `METHOD /path`.
        call: String,
        /// The HTTP status.
        status: u16,
        /// dockerd's message (`{"message": ...}`), verbatim.
        message: String,
    },
    /// The response was not the JSON the call expects.
    #[error("{call} on the Docker API at {}: cannot parse the response", socket.display())]
    Parse {
        /// The Docker API socket.
        socket: PathBuf,
        /// The call, as `METHOD /path`.
        call: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The events stream ended: dockerd stopped or closed it.
    #[error("{call} on the Docker API at {}: the stream ended", socket.display())]
    Ended {
        /// The Docker API socket.
        socket: PathBuf,
        /// The call, as `METHOD /path`.
        call: String,
    },
}

impl EngineError {
    /// True when dockerd is not answering (not running, restarting, hung), as opposed to
    /// answering with a refusal or a malformed response. Retry these with a backoff.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Http { .. } | Self::Timeout { .. } | Self::Ended { .. }
        )
    }

    /// dockerd's own message, when it refused the call.
    pub fn docker_message(&self) -> Option<&str> {
        match self {
            Self::Refused { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The HTTP status, when dockerd refused the call.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The socket and call an error happens at: builds the [`EngineError`]s of one call.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub(crate) socket: PathBuf,
    pub(crate) call: String,
}

impl Site {
    pub(crate) fn connect(&self, source: io::Error) -> EngineError {
        EngineError::Connect {
            socket: self.socket.clone(),
            call: self.call.clone(),
            source,
        }
    }

    pub(crate) fn http(&self, source: hyper::Error) -> EngineError {
        EngineError::Http {
            socket: self.socket.clone(),
            call: self.call.clone(),
            source,
        }
    }

    pub(crate) fn timeout(&self, after: Duration) -> EngineError {
        EngineError::Timeout {
            socket: self.socket.clone(),
            call: self.call.clone(),
            after,
        }
    }

    pub(crate) fn too_large(&self, limit: usize) -> EngineError {
        EngineError::TooLarge {
            socket: self.socket.clone(),
            call: self.call.clone(),
            limit,
        }
    }

    pub(crate) fn refused(&self, status: u16, message: String) -> EngineError {
        EngineError::Refused {
            socket: self.socket.clone(),
            call: self.call.clone(),
            status,
            message,
        }
    }

    pub(crate) fn parse(&self, source: serde_json::Error) -> EngineError {
        EngineError::Parse {
            socket: self.socket.clone(),
            call: self.call.clone(),
            source,
        }
    }

    pub(crate) fn ended(&self) -> EngineError {
        EngineError::Ended {
            socket: self.socket.clone(),
            call: self.call.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            socket: PathBuf::from("/run/d.sock"),
            call: "POST /networks/create".into(),
        }
    }

    #[test]
    fn a_refusal_says_where_and_keeps_dockers_message() {
        let e = site().refused(404, r#"plugin "nosuchdrv" not found"#.into());
        assert_eq!(
            e.to_string(),
            r#"POST /networks/create on the Docker API at /run/d.sock: dockerd refused (HTTP 404): plugin "nosuchdrv" not found"#
        );
        assert_eq!(e.docker_message(), Some(r#"plugin "nosuchdrv" not found"#));
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_unreachable());
    }

    #[test]
    fn unreachable_is_only_about_dockerd_not_answering() {
        let s = site();
        assert!(s
            .connect(io::Error::from(io::ErrorKind::NotFound))
            .is_unreachable());
        assert!(s.timeout(Duration::from_secs(10)).is_unreachable());
        assert!(s.ended().is_unreachable());
        assert!(!s.too_large(16).is_unreachable());
        let bad = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(!s.parse(bad).is_unreachable());
        assert_eq!(s.ended().docker_message(), None);
    }
}
