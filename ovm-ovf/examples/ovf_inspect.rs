//! `ovf_inspect PATH [--json]`: what `ovm ovf inspect` prints, as a standalone program.
//! Exits 0 with a summary, 2 with `error: <what and why>` on a refused package, 1 on a
//! failure of the host.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: ovf_inspect PATH [--json]");
        return ExitCode::from(2);
    };
    match ovm_ovf::inspect::summary_json(std::path::Path::new(path), &ovm_ovf::Limits::default()) {
        Ok(v) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", ovm_ovf::inspect::render_text(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_refusal() { 2 } else { 1 })
        }
    }
}
