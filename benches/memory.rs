//! Peak resident memory of `diffusion-lm generate` with the shipped model
//! (`cargo bench --bench memory`): runs the CLI as a child process and reads its peak RSS.

use std::process::Command;

fn peak_rss_of(args: &[&str]) -> (f64, f64) {
    let started = std::time::Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_diffusion-lm"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run diffusion-lm");
    assert!(status.success(), "diffusion-lm {args:?} failed");
    let secs = started.elapsed().as_secs_f64();
    // SAFETY: getrusage only writes into the struct we pass.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    // ru_maxrss is in KiB on Linux and covers the largest child so far.
    (usage.ru_maxrss as f64 / 1024.0, secs)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` support
    }
    for (samples, batch) in [("1", "1"), ("64", "64")] {
        let (mib, secs) = peak_rss_of(&[
            "generate",
            "--samples",
            samples,
            "--batch-size",
            batch,
            "--steps",
            "200",
        ]);
        println!("generate --samples {samples} --batch-size {batch} --steps 200: peak RSS {mib:.1} MiB (largest child so far), {secs:.1} s");
    }
}
