//! The tap's error type and the exit code each kind of failure maps to.

use std::fmt;
use std::io;

/// Everything that can stop a run. The binary logs [`one_line`] of it before
/// exiting: the message with its causes, so each variant says what went
/// wrong and, where it can, what to do about it. Underlying errors are kept
/// as sources rather than flattened into text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The command line, a config, state or catalog file is unusable.
    #[error("{0}")]
    Input(String),

    /// A config, state or catalog file could not be read.
    #[error("{what} file '{path}': cannot read it")]
    InputRead {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },

    /// A config, state or catalog file is not JSON.
    #[error("{what} file '{path}' is not valid JSON")]
    InputJson {
        what: &'static str,
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// FullStory (or the network in between) refused or failed a request.
    #[error("{0}")]
    Api(String),

    /// FullStory answered with an error status that retrying cannot mend;
    /// the message says what to check.
    #[error("{message}")]
    Refused { status: u16, message: String },

    /// FullStory no longer has what was asked for (HTTP 404 or 410 from an
    /// endpoint whose resources expire or get deleted): the caller decides.
    #[error("{0}")]
    Gone(String),

    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client")]
    HttpClient(#[source] reqwest::Error),

    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),

    /// A unit of work (a bundle, a window, a REST resource) could not be read
    /// completely and correctly.
    #[error("{0}")]
    Unit(String),

    /// The local spool directory could not be written or read back.
    #[error("{context}: {source}{advice}")]
    Spool {
        context: String,
        /// Appended after the cause: what to do, starting with "; ", or empty.
        advice: &'static str,
        #[source]
        source: io::Error,
    },

    /// The process reading our stdout (the Singer target) went away.
    #[error(
        "the target closed its input (stdout): stopping; the last STATE written is safe to resume from"
    )]
    OutputClosed,

    /// Writing to stdout failed for another reason.
    #[error("writing to stdout failed")]
    Output(#[source] io::Error),

    /// SIGINT or SIGTERM arrived.
    #[error("interrupted by {0}: stopping; the last STATE written is safe to resume from")]
    Interrupted(Signal),
}

/// The signals the tap stops on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Int,
    Term,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        })
    }
}

/// Exit code for bad command line, config, state or catalog.
pub(crate) const EXIT_INPUT: i32 = 2;
/// Exit code for failures while syncing (API, network, unit data, spool).
pub(crate) const EXIT_RUNTIME: i32 = 1;
/// Exit code when the target stopped reading stdout.
pub(crate) const EXIT_OUTPUT_CLOSED: i32 = 3;

impl Error {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) | Error::InputRead { .. } | Error::InputJson { .. } => EXIT_INPUT,
            Error::Api(_)
            | Error::Refused { .. }
            | Error::Gone(_)
            | Error::HttpClient(_)
            | Error::Runtime(_)
            | Error::Unit(_)
            | Error::Spool { .. }
            | Error::Output(_) => EXIT_RUNTIME,
            Error::OutputClosed => EXIT_OUTPUT_CLOSED,
            Error::Interrupted(Signal::Int) => 130,
            Error::Interrupted(Signal::Term) => 143,
        }
    }

    /// Maps an error from writing stdout, recognising a closed pipe.
    pub(crate) fn from_output(err: io::Error) -> Error {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Error::OutputClosed
        } else {
            Error::Output(err)
        }
    }

    /// The error with `prefix` before its message (the stream it is of),
    /// where it has a message of its own.
    pub(crate) fn prefixed(self, prefix: &str) -> Error {
        match self {
            Error::Api(m) => Error::Api(format!("{prefix}{m}")),
            Error::Refused { status, message } => Error::Refused {
                status,
                message: format!("{prefix}{message}"),
            },
            other => other,
        }
    }

    /// A spool file error with what to do about it.
    pub(crate) fn spool(context: String, advice: &'static str, source: io::Error) -> Error {
        Error::Spool {
            context,
            advice,
            source,
        }
    }
}

/// An error with its causes, on one line; a cause whose text the message
/// already holds is not repeated.
pub(crate) fn one_line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Shorthand used across the crate.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_causes_once() {
        let err = Error::InputRead {
            what: "config",
            path: "c.json".into(),
            source: io::Error::other("no such file"),
        };
        assert_eq!(
            one_line(&err),
            "config file 'c.json': cannot read it: no such file"
        );
        let err = Error::spool(
            "cannot write the spool file in '/x'".into(),
            "; free space there",
            io::Error::other("disk full"),
        );
        assert_eq!(
            one_line(&err),
            "cannot write the spool file in '/x': disk full; free space there"
        );
        assert_eq!(err.exit_code(), EXIT_RUNTIME);
    }
}
