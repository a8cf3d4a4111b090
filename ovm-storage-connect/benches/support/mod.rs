//! Shared by the benchmarks: medians, timing a command, printing one JSON line per figure.
#![allow(dead_code)]

pub mod clone;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Median of `samples` (which must not be empty).
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs a command to completion and returns how long it took; panics if it fails.
pub fn time_command(program: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Flushes every file system, so that one run's write-back does not land in the next.
pub fn settle() {
    let _ = Command::new("sync").status();
}

/// Prints one figure beside its peer.
pub fn emit(
    bench: &str,
    metric: &str,
    value: f64,
    unit: &str,
    peer: &str,
    peer_value: f64,
    extra: Value,
) {
    let mut line = json!({
        "bench": bench,
        "metric": metric,
        "value": value,
        "unit": unit,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": if peer_value > 0.0 { (value / peer_value * 1000.0).round() / 1000.0 } else { 0.0 },
    });
    if let (Some(obj), Value::Object(more)) = (line.as_object_mut(), extra) {
        obj.extend(more);
    }
    println!("{line}");
}

/// Prints one figure without a peer.
pub fn emit_alone(bench: &str, metric: &str, value: f64, unit: &str, extra: Value) {
    let mut line = json!({"bench": bench, "metric": metric, "value": value, "unit": unit});
    if let (Some(obj), Value::Object(more)) = (line.as_object_mut(), extra) {
        obj.extend(more);
    }
    println!("{line}");
}

/// Says why a benchmark cannot run here, as a JSON line, and exits successfully.
pub fn skip(bench: &str, reason: &str) -> ! {
    println!("{}", json!({"bench": bench, "skipped": reason}));
    std::process::exit(0);
}
