//! Peak resident memory of generation with the shipped model (`cargo bench -p diffusion-lm --bench memory`):
//! loads the model, generates, and reads the process's peak RSS. Each configuration runs in a
//! fresh child process (this bench re-executes itself), so the figures do not mix.

use std::process::Command;

use candle_core::Device;
use diffusion_lm::{DiffusionLm, Generator};

fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    usage.ru_maxrss as f64 / 1024.0 // KiB on Linux
}

fn child(samples: usize, batch: usize) {
    diffusion_lm::tune_runtime();
    let before = peak_rss_mib();
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &Device::Cpu).expect("shipped model");
    let started = std::time::Instant::now();
    let out = Generator::new(&lm)
        .steps(200)
        .batch_size(batch)
        .generate(samples)
        .expect("generate");
    assert_eq!(out.len(), samples);
    println!(
        "generate {samples} samples, batch {batch}, 200 steps: peak RSS {:.1} MiB (process start {:.1} MiB), {:.2} s",
        peak_rss_mib(),
        before,
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let samples = args[pos + 1].parse().expect("samples");
        let batch = args[pos + 2].parse().expect("batch");
        child(samples, batch);
        return;
    }
    for (samples, batch) in [(1usize, 1usize), (64, 64), (256, 64)] {
        let status = Command::new(&args[0])
            .args(["--child", &samples.to_string(), &batch.to_string()])
            .status()
            .expect("re-run the bench binary");
        assert!(status.success());
    }
}
