//! Writing results to standard output and messages to standard error without panicking.
//!
//! `println!` panics when standard output fails: `diffusion-lm generate | head -1` would end in a
//! panic once `head` exits, and `> /dev/full` in another. Results go through [`out`] instead,
//! which turns a closed pipe into [`ClosedPipe`] (the command then stops and exits 0: the reader
//! has all it wanted) and any other failure into an error naming standard output. Messages go
//! through `status!`, which drops what cannot be written: a lost progress note
//! is no reason to stop a run.

use std::io::Write;

/// The reader of standard output has gone away (a closed pipe); the command should stop quietly.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed by its reader")]
pub struct ClosedPipe;

/// Writes `text` and a newline to standard output, and flushes it, so a reader sees each result
/// as soon as it exists.
pub fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(ClosedPipe),
            _ => anyhow::Error::new(e).context("writing to standard output"),
        })
}

/// Whether an error is (caused by) a closed standard output.
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<ClosedPipe>())
}

/// `eprintln!` that never panics: what cannot be written to standard error is dropped.
macro_rules! status {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
