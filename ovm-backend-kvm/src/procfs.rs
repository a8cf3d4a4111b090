//! Finding VMM processes by what their command line names, through /proc: how tests and
//! tools check that no VMM of a run directory is left.

use std::path::Path;

/// Pids of live (not zombie) processes whose command line mentions `dir`: the VMMs whose
/// configuration or socket lives under it.
pub fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_process_by_a_directory_on_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        // `tail -f <dir>/log`: the directory is on its command line.
        let log = dir.path().join("log");
        std::fs::write(&log, b"").unwrap();
        let mut child = std::process::Command::new("tail")
            .arg("-f")
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(processes_mentioning(dir.path()).contains(&pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!processes_mentioning(dir.path()).contains(&pid));
    }
}
