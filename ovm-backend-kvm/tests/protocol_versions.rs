//! The driver refuses a VMM that speaks another major version of the control protocol (or
//! none): one it starts, attached or detached, is killed and the start fails naming both
//! versions and the VM; one it finds in a run directory is not adopted and left alone.
//! The VMMs here are small shell scripts (or a socket) that answer as such a VMM would.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovm_backend_kvm::control::{ClientError, PROTOCOL_VERSION};
use ovm_backend_kvm::vmm::{BootConfig, VmmConfig};
use ovm_backend_kvm::{KvmHypervisor, KvmOptions, kvm_usable};
use ovm_core::hypervisor::{Hypervisor, VmConfig};
use ovm_core::model::VmState;

/// A directory holding an executable `vmm` script with `body`, or `None` (said why)
/// where KVM is not usable (the backend will not open without it).
fn script_vmm(body: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if let Err(reason) = kvm_usable() {
        eprintln!("skipped: {reason}");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vmm");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Some((dir, path))
}

fn attached(dir: &Path, vmm: &Path) -> KvmHypervisor {
    KvmHypervisor::with_options(KvmOptions {
        state_dir: dir.join("state"),
        vmm_binary: Some(vmm.into()),
        start_timeout: Duration::from_secs(10),
        ..KvmOptions::default()
    })
    .expect("backend")
}

/// The typed refusal inside a backend error.
fn mismatch(e: &ovm_core::Error) -> Option<&ClientError> {
    let ovm_core::Error::Backend {
        source: Some(source),
        ..
    } = e
    else {
        return None;
    };
    source
        .downcast_ref::<ClientError>()
        .filter(|c| matches!(c, ClientError::VersionMismatch { .. }))
}

fn alive(pid: i32) -> bool {
    // A zombie has exited too: only a process that can still run counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn wait_dead(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attached_vmm_of_another_major_version_is_refused_and_killed() {
    let Some((dir, vmm)) = script_vmm(
        r#"echo $$ > "$(dirname "$0")/pid"
echo '{"event":"listening","pid":'$$',"protocol":"2.0"}'
echo '{"event":"started"}'
exec sleep 30"#,
    ) else {
        return;
    };
    let hv = attached(dir.path(), &vmm);
    let vm = common::guest("future", "idle", 16);
    hv.define(&vm).await.expect("define");
    let e = hv.start(vm.id).await.expect_err("refused");
    let text = e.to_string();
    for part in [
        vm.id.to_string().as_str(),
        "protocol 2.0",
        &format!("speaks {PROTOCOL_VERSION}"),
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    match mismatch(&e) {
        Some(ClientError::VersionMismatch { ours, theirs, .. }) => {
            assert_eq!(*ours, PROTOCOL_VERSION);
            assert_eq!(theirs.map(|v| v.major), Some(2));
        }
        other => panic!("{other:?} in {e:?}"),
    }
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Stopped);
    assert_eq!(hv.vmm_pid(vm.id), None);
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_dead(pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attached_vmm_that_states_no_version_is_refused() {
    // Events without the `listening` line first: a VMM from before versioning.
    let Some((dir, vmm)) = script_vmm(
        r#"echo '{"event":"started"}'
exec sleep 30"#,
    ) else {
        return;
    };
    let hv = attached(dir.path(), &vmm);
    let vm = common::guest("past", "idle", 16);
    hv.define(&vm).await.expect("define");
    let e = hv.start(vm.id).await.expect_err("refused");
    assert!(
        matches!(
            mismatch(&e),
            Some(ClientError::VersionMismatch { theirs: None, .. })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("predates versioning"), "{e}");
    assert_eq!(hv.state(vm.id).await.unwrap(), VmState::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_detached_vmm_of_another_major_version_is_refused_before_it_starts() {
    // As `ovm-vmm --detach` does: the announced VMM is another process, left running.
    let Some((dir, vmm)) = script_vmm(
        r#"sleep 30 </dev/null >/dev/null 2>&1 &
echo $! > "$(dirname "$0")/pid"
echo '{"event":"listening","pid":'$!',"protocol":"0.9"}'"#,
    ) else {
        return;
    };
    let hv = KvmHypervisor::open(KvmOptions {
        vmm_binary: Some(vmm.clone()),
        ..KvmOptions::with_run_dir(dir.path().join("run"))
    })
    .await
    .expect("open");
    let vm = common::guest("past", "idle", 16);
    hv.define(&vm).await.expect("define");
    let e = hv.start(vm.id).await.expect_err("refused");
    assert!(
        matches!(
            mismatch(&e),
            Some(ClientError::VersionMismatch { theirs: Some(v), .. }) if v.to_string() == "0.9"
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains(&vm.id.to_string()), "{e}");
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_dead(pid);
    assert_ne!(hv.state(vm.id).await.unwrap(), VmState::Running);
}

/// A socket in `dir` answering every line as a VMM of protocol 2.0 would; counts the
/// requests it read.
fn future_vmm_socket(socket: &Path) -> Arc<Mutex<Vec<String>>> {
    let listener = UnixListener::bind(socket).expect("bind");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut writer = stream.try_clone().expect("clone");
            let mut line = String::new();
            if BufReader::new(stream).read_line(&mut line).is_ok() {
                log.lock().unwrap().push(line.trim_end().to_string());
                let _ = writer.write_all(
                    b"{\"protocol\":\"2.0\",\"ok\":true,\"result\":{\"type\":\"subscribed\"}}\n",
                );
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_directory_vmm_of_another_major_version_is_not_adopted_and_left_alone() {
    let Some((dir, _vmm)) = script_vmm("exit 1") else {
        return;
    };
    let run_dir = dir.path().join("run");
    let config: VmConfig = common::guest("future", "idle", 16);
    let vm_dir = run_dir.join(config.id.to_string());
    std::fs::create_dir_all(&vm_dir).expect("dir");
    let record = serde_json::json!({
        "config": config,
        "vmm_config": VmmConfig {
            vcpus: 1,
            memory_mib: 16,
            boot: BootConfig::Kernel { kernel: "/nonexistent".into(), initrd: None, cmdline: String::new() },
            console_log: None,
            disks: Vec::new(),
            prefer_pvh: false,
        },
        "started_unix_ms": 0,
    });
    std::fs::write(vm_dir.join("vm.json"), record.to_string()).expect("write");
    let seen = future_vmm_socket(&vm_dir.join("api.sock"));

    let hv = KvmHypervisor::open(KvmOptions {
        vmm_binary: Some(env!("CARGO_BIN_EXE_ovm-vmm").into()),
        ..KvmOptions::with_run_dir(&run_dir)
    })
    .await
    .expect("open");
    assert!(
        hv.state(config.id).await.is_err(),
        "a VMM of another version is not adopted"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [r#"{"op":"events"}"#],
        "asked once, not again and not told to shut down"
    );
    assert!(
        vm_dir.join("vm.json").exists(),
        "its directory is left alone"
    );
}
