//! Running `xl`: the one seam between this backend and the Xen toolstack.
//!
//! Everything the backend asks of Xen goes through [`XlRunner::run`], so the backend's
//! logic is tested without Xen against [`crate::fake::FakeXl`] and drives the real
//! toolstack through [`ProcessXl`] in dom0.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::XlError;

/// Runs one `xl` command and returns its standard output.
#[async_trait]
pub trait XlRunner: Send + Sync + std::fmt::Debug {
    /// Runs `xl ARGS...`; `Ok(stdout)` when it exits 0, `XlError::Failed` with what it
    /// printed otherwise, `XlError::TimedOut` (after killing it) when it outlives `timeout`.
    async fn run(&self, args: &[OsString], timeout: Duration) -> Result<String, XlError>;
}

/// The command line as text, for errors and logs.
pub fn command_line(program: &str, args: &[OsString]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Turns a list of string-like arguments into `OsString`s.
pub fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    items.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

/// What `xl` printed, reduced to what explains a failure: the "Parsing config from"
/// banner and progress meters are dropped, the rest is kept (libxl's error lines included).
pub fn failure_message(stderr: &str, stdout: &str) -> String {
    let pick = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let kept: Vec<&str> = pick
        .lines()
        // Progress meters redraw with '\r'; only the last state of a line matters.
        .map(|l| l.rsplit('\r').next().unwrap_or(l).trim_end())
        .filter(|l| !l.is_empty() && !l.starts_with("Parsing config from"))
        .collect();
    const MAX: usize = 4096;
    let mut msg = kept.join("\n");
    if msg.len() > MAX {
        let mut cut = msg.len() - MAX;
        while !msg.is_char_boundary(cut) {
            cut += 1;
        }
        msg = format!("...{}", &msg[cut..]);
    }
    if msg.is_empty() {
        "(xl printed nothing)".to_string()
    } else {
        msg
    }
}

/// Runs the real `xl` binary as a child process (in dom0, as root).
#[derive(Debug, Clone)]
pub struct ProcessXl {
    program: PathBuf,
}

impl ProcessXl {
    /// `xl` found on `PATH`.
    pub fn new() -> Self {
        Self::with_program("xl")
    }

    /// A specific `xl` binary, e.g. `/usr/lib/xen-4.17/bin/xl`.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        ProcessXl {
            program: program.into(),
        }
    }
}

impl Default for ProcessXl {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl XlRunner for ProcessXl {
    async fn run(&self, args: &[OsString], timeout: Duration) -> Result<String, XlError> {
        let program = self.program.to_string_lossy().into_owned();
        let command = command_line(&program, args);
        tracing::debug!(%command, "running xl");
        let child = tokio::process::Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            // glibc reports heap corruption and the like on the controlling terminal
            // unless told otherwise; the message belongs in the error.
            .env("LIBC_FATAL_STDERR_", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out `xl` is killed when the future holding it is dropped.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| XlError::Spawn {
                program: program.clone(),
                source: Arc::new(e),
            })?;
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(XlError::Spawn {
                    program,
                    source: Arc::new(e),
                });
            }
            Err(_) => {
                return Err(XlError::TimedOut {
                    command,
                    after: timeout,
                });
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(XlError::Failed {
            command,
            status: output.status.to_string(),
            message: failure_message(&stderr, &stdout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_messages_drop_banners_and_progress() {
        let stderr = "Parsing config from /x.cfg\nxc: Frames: 1/4  25%\rxc: Frames: 4/4 100%\nlibxl: error: boom\n";
        assert_eq!(
            failure_message(stderr, ""),
            "xc: Frames: 4/4 100%\nlibxl: error: boom"
        );
        assert_eq!(failure_message("", "only stdout\n"), "only stdout");
        assert_eq!(failure_message("", ""), "(xl printed nothing)");
    }

    #[test]
    fn long_messages_keep_their_end() {
        let long = format!("{}\nthe cause", "x".repeat(10_000));
        let msg = failure_message(&long, "");
        assert!(msg.len() <= 4100);
        assert!(msg.ends_with("the cause"));
    }

    #[test]
    fn command_lines_quote_empty_and_spaced_arguments() {
        let line = command_line(
            "xl",
            &args(["migrate", "-s", "", "g", "xl migrate-receive"]),
        );
        assert_eq!(line, r#"xl migrate -s "" g "xl migrate-receive""#);
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let xl = ProcessXl::with_program("/nonexistent/ovm-test/xl");
        let err = xl
            .run(&args(["info"]), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, XlError::Spawn { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn exit_status_and_stderr_become_failed() {
        // `sh -c` stands in for xl: same process handling, no Xen needed.
        let sh = ProcessXl::with_program("/bin/sh");
        let err = sh
            .run(
                &args(["-c", "echo 'libxl: error: nope' >&2; exit 3"]),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        match err {
            XlError::Failed {
                message, status, ..
            } => {
                assert_eq!(message, "libxl: error: nope");
                assert!(status.contains('3'), "{status}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        let out = sh
            .run(&args(["-c", "echo hello"]), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out, "hello\n");
    }

    #[tokio::test]
    async fn slow_commands_are_killed_at_the_timeout() {
        let sh = ProcessXl::with_program("/bin/sh");
        let t0 = std::time::Instant::now();
        let err = sh
            .run(&args(["-c", "sleep 30"]), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, XlError::TimedOut { .. }), "{err:?}");
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
}
