//! The tap's error type and the exit code each kind of failure maps to.

use std::fmt;

/// Everything that can stop a run. The `Display` form is the one-line message
/// the binary logs before exiting, so each variant's text says what went wrong
/// and, where it can, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line, a config, state or catalog file is unusable.
    #[error("{0}")]
    Input(String),

    /// FullStory (or the network in between) refused or failed a request.
    #[error("{0}")]
    Api(String),

    /// A bundle could not be read completely and correctly.
    #[error("{0}")]
    Bundle(String),

    /// The local spool directory could not be written.
    #[error("{0}")]
    Spool(String),

    /// The process reading our stdout (the Singer target) went away.
    #[error(
        "the target closed its input (stdout): stopping; the last STATE written is safe to resume from"
    )]
    OutputClosed,

    /// Writing to stdout failed for another reason.
    #[error("writing to stdout failed: {0}")]
    Output(std::io::Error),

    /// SIGINT or SIGTERM arrived.
    #[error("interrupted by {0}: stopping; the last STATE written is safe to resume from")]
    Interrupted(Signal),
}

/// The signals the tap stops on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
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
pub const EXIT_INPUT: i32 = 2;
/// Exit code for failures while syncing (API, network, bundle data, spool).
pub const EXIT_RUNTIME: i32 = 1;
/// Exit code when the target stopped reading stdout.
pub const EXIT_OUTPUT_CLOSED: i32 = 3;

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => EXIT_INPUT,
            Error::Api(_) | Error::Bundle(_) | Error::Spool(_) | Error::Output(_) => EXIT_RUNTIME,
            Error::OutputClosed => EXIT_OUTPUT_CLOSED,
            Error::Interrupted(Signal::Int) => 130,
            Error::Interrupted(Signal::Term) => 143,
        }
    }

    /// Maps an error from writing stdout, recognising a closed pipe.
    pub fn from_output(err: std::io::Error) -> Error {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            Error::OutputClosed
        } else {
            Error::Output(err)
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
