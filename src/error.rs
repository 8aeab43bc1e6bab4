//! The error type of the engine crate.
//!
//! Every fallible public function returns [`Result`]. Messages say what went wrong and where
//! (which file, which tensor, which line of a corpus), so a user can act on them without a debugger.

use std::path::PathBuf;

/// Errors raised by the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file that could not be read or written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (config, corpus line, ...) could not be parsed.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file holding the invalid JSON.
        path: PathBuf,
        /// The parser's description of the problem.
        message: String,
    },

    /// The tokenizer could not be trained, loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A corpus is unreadable, empty or malformed.
    #[error("corpus {path}: {message}")]
    Corpus {
        /// The corpus file.
        path: PathBuf,
        /// What is wrong with it (and where).
        message: String,
    },

    /// A checkpoint directory is incomplete or its files disagree with each other.
    #[error("checkpoint {dir}: {message}")]
    Checkpoint {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What is missing or inconsistent.
        message: String,
    },

    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A sampling request the model cannot serve (zero steps, too long a sequence, ...).
    #[error("invalid sampling request: {0}")]
    Sampling(String),

    /// A constraint could not be built (bad pattern, automaton too large, ...).
    #[error("constraint: {0}")]
    Constraint(String),

    /// The constraints admit no sequence of the requested length; detected before sampling.
    #[error("unsatisfiable constraints: {0}")]
    Unsatisfiable(String),

    /// A generated sequence failed a controller's independent check (a bug, never returned as text).
    #[error("output failed the independent check of {controller}: {message}")]
    CheckFailed {
        /// Name of the controller whose check failed.
        controller: String,
        /// Why the sequence was rejected.
        message: String,
    },

    /// Writing a plot failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// The plot file being written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The message of a [`Error::Config`] without its prefix (the display of any other error),
    /// for readers that put it in a context of their own.
    pub(crate) fn bare_message(self) -> String {
        match self {
            Error::Config(m) => m,
            other => other.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn checkpoint(dir: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            dir: dir.into(),
            message: message.into(),
        }
    }
    pub(crate) fn corpus(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Corpus {
            path: path.into(),
            message: message.into(),
        }
    }
}
