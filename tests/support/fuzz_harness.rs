//! The harness of the fuzz tests, shared by `controllers/tests/fuzz.rs`, `tests/fuzz_loading.rs`
//! and `cli/src/fuzz_tests.rs` (each includes this file with `#[path]`): case counts from
//! `FUZZ_CASES`, one proptest run per property with its inputs counted, and result lines that
//! `benches/fuzz.sh` collects from the file named by `FUZZ_REPORT`.

#![allow(dead_code)]

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

/// Cases per property: `FUZZ_CASES` divided by `divisor` (for the slow properties) if set, else
/// `default`.
pub fn cases(default: u32, divisor: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(default, |n| (n / divisor).max(1))
}

/// Prints a result line on stderr and, when `FUZZ_REPORT` names a file, appends it there in one
/// write (`benches/fuzz.sh` reads that file: stderr interleaves with panic messages).
pub fn report(line: String) {
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("FUZZ_REPORT") {
        use std::io::Write;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
        if let Err(e) = file.and_then(|mut f| f.write_all(format!("{line}\n").as_bytes())) {
            eprintln!("FUZZ_REPORT {}: {e}", std::path::Path::new(&path).display());
        }
    }
}

/// Runs `test` on `cases` values of `strategy`; a panic inside `test` is a failure (proptest
/// catches it and shrinks the input). `test` returns whether the input was accepted (compiled,
/// loaded, parsed: `accepted` names it in the report). Reports `FUZZ {target}/{name}`: the
/// inputs tried, how many were accepted, and the slowest.
pub fn fuzz<S: Strategy>(
    target: &str,
    accepted: &str,
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) where
    S::Value: Debug,
{
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let tried = AtomicUsize::new(0);
    let passed = AtomicUsize::new(0);
    let slowest = Mutex::new((Duration::ZERO, String::new()));
    let result = runner.run(&strategy, |value| {
        tried.fetch_add(1, Ordering::Relaxed);
        let shown = format!("{value:?}");
        let start = Instant::now();
        let r = test(value);
        let took = start.elapsed();
        let mut s = slowest.lock().unwrap_or_else(|p| p.into_inner());
        if took > s.0 {
            *s = (took, shown);
        }
        if matches!(r, Ok(true)) {
            passed.fetch_add(1, Ordering::Relaxed);
        }
        r.map(|_| ())
    });
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
    let (took, input) = slowest.into_inner().unwrap_or_else(|p| p.into_inner());
    let input: String = input.chars().take(300).collect();
    report(format!(
        "FUZZ {target}/{name}: {} inputs tried ({} {accepted}), 0 panics; slowest {:.1} ms: {input}",
        tried.into_inner(),
        passed.into_inner(),
        took.as_secs_f64() * 1e3
    ));
}
