//! The error type of building a controller, [`ControllerError`].
//!
//! Every controller's constructor returns it. Each variant names what failed (the pattern, the
//! template, the JSON pointer, the grammar) and why; a limit that was exceeded is named by its
//! [`Limits`](crate::Limits) field where the message can tell. Errors *during* generation (a
//! token automaton too large for a vocabulary, for instance) are the engine's
//! [`diffusion_lm::Error`] instead, since they depend on the model.

/// Errors building a controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A pattern that does not parse, cannot be anchored, or exceeds a size limit.
    #[error("regex {pattern:?}: {message}")]
    Regex { pattern: String, message: String },
    /// An infill template without holes, or whose pattern does not compile.
    #[error("infill template {template:?}: {message}")]
    Template { template: String, message: String },
    /// An empty length range.
    #[error("length: {0}")]
    Length(String),
    /// A JSON Schema that cannot be compiled; `pointer` locates the offending schema node.
    #[error("JSON Schema at {pointer}: {message}")]
    JsonSchema { pointer: String, message: String },
    /// Input that is not JSON, or a file that cannot be read.
    #[error("{0}")]
    Input(String),
    /// A GBNF grammar that cannot be parsed or compiled.
    #[error("grammar {grammar}: {message}")]
    Grammar { grammar: String, message: String },
    /// An attribute target the classifier does not know, or a classifier that cannot be loaded.
    #[error("attribute: {0}")]
    Attribute(String),
}

/// An error and all its causes, `outer: inner: innermost`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        msg = format!("{msg}: {cause}");
        source = cause.source();
    }
    msg
}
