//! Detached VMMs in a run directory: a VM started by one process keeps running when that
//! process exits, and the next process on the run directory adopts it — lists it, talks to
//! it, sees it end, stops it. Dead VMMs' directories are cleaned up; other files survive.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ovm_backend_kvm::{KvmHypervisor, KvmOptions, kvm_usable};
use ovm_core::VmId;
use ovm_core::hypervisor::{Hypervisor, VmEventKind};
use ovm_core::model::VmState;

/// Set in the child process of `a_vm_outlives_the_process_that_started_it`: its run dir.
const CHILD_RUN_DIR: &str = "OVM_TEST_DETACHED_RUN_DIR";

fn options(run_dir: &Path) -> KvmOptions {
    KvmOptions {
        vmm_binary: Some(env!("CARGO_BIN_EXE_ovm-vmm").into()),
        ..KvmOptions::with_run_dir(run_dir)
    }
}

fn vmms_under(dir: &Path) -> Vec<i32> {
    ovm_backend_kvm::procfs::processes_mentioning(dir)
}

/// Kills every VMM started under its directory when dropped, so a failing test leaks none.
struct KillVmmsOnDrop(PathBuf);

impl Drop for KillVmmsOnDrop {
    fn drop(&mut self) {
        for pid in vmms_under(&self.0) {
            // SAFETY: kill takes plain integers; the pid was just seen running our VMM.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A temporary directory and the run dir inside it, or `None` (said why) where KVM is
/// not usable.
fn run_bed() -> Option<(tempfile::TempDir, PathBuf)> {
    if let Err(reason) = kvm_usable() {
        eprintln!("skipped: {reason}");
        return None;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let run_dir = tmp.path().join("run");
    Some((tmp, run_dir))
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// In the child: start a `kv` guest on the run dir and exit, leaving it running.
fn child_starts_a_vm(run_dir: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let hv = KvmHypervisor::open(options(run_dir)).await.expect("open");
        let config = common::guest("outliver", "kv", 32);
        common::boot(&hv, &config).await;
        common::console_shows(&hv, config.id, "cmdline: kv", Duration::from_secs(10)).await;
        std::fs::write(run_dir.join("..").join("vm-id"), config.id.to_string()).expect("write");
    });
}

#[test]
fn a_vm_outlives_the_process_that_started_it() {
    if let Some(dir) = std::env::var_os(CHILD_RUN_DIR) {
        child_starts_a_vm(Path::new(&dir));
        return;
    }
    let Some((tmp, run_dir)) = run_bed() else {
        return;
    };
    let _guard = KillVmmsOnDrop(run_dir.clone());

    // A process starts the VM and exits.
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "a_vm_outlives_the_process_that_started_it",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_RUN_DIR, &run_dir)
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let id: VmId = std::fs::read_to_string(tmp.path().join("vm-id"))
        .expect("vm id")
        .parse()
        .expect("a VM id");
    let pids = vmms_under(&run_dir);
    assert_eq!(pids.len(), 1, "one VMM runs after its starter exited");
    let meta = std::fs::metadata(run_dir.join(id.to_string())).expect("vm dir");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "vm dir owner-only"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // The next process adopts it.
        let hv = KvmHypervisor::open(options(&run_dir)).await.expect("open");
        assert_eq!(hv.list().await.expect("list"), vec![(id, VmState::Running)]);
        assert_eq!(hv.vmm_pid(id), Some(pids[0] as u32));
        // What the guest printed before we came is there.
        common::console_shows(&hv, id, "ovm-guest: cmdline: kv", Duration::from_secs(5)).await;
        // Guest messages both ways.
        hv.guest_send(id, "ping", b"adopted").await.expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = hv.guest_read(id, "ping").await.expect("read") {
                assert_eq!(v, b"echo:adopted");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the adopted guest never answered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        hv.pause(id).await.expect("pause");
        assert_eq!(hv.state(id).await.expect("state"), VmState::Paused);
        hv.resume(id).await.expect("resume");

        let mut events = hv.subscribe();
        hv.stop(id, Duration::from_secs(5)).await.expect("stop");
        assert_eq!(hv.state(id).await.expect("state"), VmState::Stopped);
        common::event(&mut events, id, Duration::from_secs(5), |k| {
            matches!(k, VmEventKind::Stopped)
        })
        .await;
        hv.undefine(id).await.expect("undefine");
    });
    wait_until("the VMM to end", Duration::from_secs(5), || {
        vmms_under(&run_dir).is_empty()
    });
    let left: Vec<_> = std::fs::read_dir(&run_dir)
        .expect("run dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "run dir is clean: {left:?}");
}

#[tokio::test]
async fn adopted_vms_report_their_end_like_children() {
    let Some((_tmp, run_dir)) = run_bed() else {
        return;
    };
    let _guard = KillVmmsOnDrop(run_dir.clone());
    let first = KvmHypervisor::open(options(&run_dir)).await.expect("open");
    let off = common::guest("powers-off", "kv", 32);
    let dies = common::guest("dies", "idle", 32);
    common::boot(&first, &off).await;
    common::boot(&first, &dies).await;

    // A second backend on the same run dir (as a restarted manager would be).
    let second = KvmHypervisor::open(options(&run_dir)).await.expect("open");
    let mut listed = second.list().await.expect("list");
    listed.sort_by_key(|(id, _)| id.to_string());
    let mut want = vec![(off.id, VmState::Running), (dies.id, VmState::Running)];
    want.sort_by_key(|(id, _)| id.to_string());
    assert_eq!(listed, want);
    let mut events = second.subscribe();

    // The guest powers off: the adopter sees `PoweredOff`.
    second
        .guest_send(off.id, "ovm.cmd", b"poweroff")
        .await
        .expect("send");
    common::event(&mut events, off.id, Duration::from_secs(10), |k| {
        matches!(k, VmEventKind::PoweredOff)
    })
    .await;
    assert_eq!(second.state(off.id).await.expect("state"), VmState::Stopped);

    // The VMM is killed from outside: the adopter sees it crash.
    let pid = second.vmm_pid(dies.id).expect("pid");
    // SAFETY: kill takes plain integers; the pid is the VMM the backend follows.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let kind = common::event(&mut events, dies.id, Duration::from_secs(10), |k| {
        matches!(k, VmEventKind::InternalError { .. })
    })
    .await;
    assert!(
        format!("{kind:?}").contains("without an exit report"),
        "{kind:?}"
    );
    assert_eq!(
        second.state(dies.id).await.expect("state"),
        VmState::Crashed
    );
    wait_until("no VMM left", Duration::from_secs(5), || {
        vmms_under(&run_dir).is_empty()
    });
}

/// Two processes share a run directory: each lists what the other started after it
/// connected (reconciliation compares such a listing with the store), and a start of a VM
/// whose VMM the other runs is refused, never a second VMM.
#[tokio::test]
async fn a_listing_includes_what_another_backend_started_since() {
    let Some((_tmp, run_dir)) = run_bed() else {
        return;
    };
    let _guard = KillVmmsOnDrop(run_dir.clone());
    let first = KvmHypervisor::open(options(&run_dir)).await.expect("open");
    let second = KvmHypervisor::open(options(&run_dir)).await.expect("open");
    let loser = KvmHypervisor::open(options(&run_dir)).await.expect("open");
    let config = common::guest("shared", "idle", 32);
    // The loser defined it before the first started it (a start that should have lost).
    loser.define(&config).await.expect("define");
    common::boot(&first, &config).await;
    assert_eq!(
        second.list().await.expect("list"),
        vec![(config.id, VmState::Running)]
    );
    let err = loser.start(config.id).await.expect_err("a second VMM");
    assert!(
        matches!(err, ovm_core::Error::InvalidState { .. })
            && err.to_string().contains("another process"),
        "{err}"
    );
    assert_eq!(vmms_under(&run_dir).len(), 1, "one VMM");
    first.kill(config.id).await.expect("kill");
    first.undefine(config.id).await.expect("undefine");
}

#[tokio::test]
async fn stale_vm_dirs_are_removed_and_garbage_is_left_alone() {
    let Some((_tmp, run_dir)) = run_bed() else {
        return;
    };
    std::fs::create_dir_all(&run_dir).expect("run dir");
    // A VM dir whose VMM died: a socket nobody listens on, a record, a console log.
    let dead = VmId::new();
    let dead_dir = run_dir.join(dead.to_string());
    std::fs::create_dir(&dead_dir).expect("dir");
    drop(std::os::unix::net::UnixListener::bind(dead_dir.join("api.sock")).expect("bind"));
    std::fs::write(dead_dir.join("vm.json"), b"{\"not\": \"a record\"}").expect("write");
    std::fs::write(dead_dir.join("console.log"), b"old output").expect("write");
    // A VM dir with nothing in it, left long ago by a starter that died; one made a
    // moment ago (its starter is writing it now); garbage beside them.
    let empty = VmId::new();
    std::fs::create_dir(run_dir.join(empty.to_string())).expect("dir");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(120);
    std::fs::File::open(run_dir.join(empty.to_string()))
        .and_then(|d| d.set_modified(long_ago))
        .expect("age the dir");
    let fresh = VmId::new();
    std::fs::create_dir(run_dir.join(fresh.to_string())).expect("dir");
    std::fs::write(run_dir.join("notes.txt"), [0xff, 0x00, 0x13]).expect("write");
    std::fs::create_dir(run_dir.join("not-a-vm")).expect("dir");
    std::fs::write(run_dir.join(VmId::new().to_string()), b"a file, not a dir").expect("write");

    let hv = KvmHypervisor::open(options(&run_dir)).await.expect("open");
    assert_eq!(
        hv.list().await.expect("list"),
        vec![(fresh, VmState::Starting)],
        "only the dir being prepared is listed, as being started elsewhere"
    );
    assert!(!dead_dir.exists(), "the dead VMM's dir is removed");
    assert!(!run_dir.join(empty.to_string()).exists());
    assert!(
        run_dir.join(fresh.to_string()).exists(),
        "a dir being prepared is left to its starter"
    );
    assert!(run_dir.join("notes.txt").exists(), "garbage is left alone");
    assert!(run_dir.join("not-a-vm").exists());

    // The backend still works there.
    let _guard = KillVmmsOnDrop(run_dir.clone());
    let config = common::guest("after-garbage", "idle", 32);
    common::boot(&hv, &config).await;
    hv.kill(config.id).await.expect("kill");
    hv.undefine(config.id).await.expect("undefine");
}

#[test]
fn with_options_refuses_a_run_dir() {
    if let Err(reason) = kvm_usable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let err = KvmHypervisor::with_options(options(tmp.path())).expect_err("refused");
    assert!(err.to_string().contains("KvmHypervisor::open"), "{err}");
}
