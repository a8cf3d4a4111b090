//! Crash safety with real processes: a child process (this test binary re-run as a helper)
//! works on a repository and is killed with SIGKILL at chosen or arbitrary moments; the
//! parent reopens the repository and checks that nothing half-made is visible, that every
//! finished operation is there, and that leftovers are gone. Also: the repository lock is
//! held across processes and released when its holder dies.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::{GIB, MIB, TestRoot, have_qemu_img, spread_data};
use ovm_core::id::PoolId;
use ovm_core::storage::{StoragePlugin, VolumeAccess, VolumeSpec};
use ovm_core::{OpContext, model::VolumeFormat};
use ovm_storage_connect::{CloneMode, FsConfig, FsPlugin};
use serde::{Deserialize, Serialize};

/// Environment variable carrying the child's orders.
const CHILD_ENV: &str = "OVM_FS_CRASH_CHILD";
/// Prefix of the child's report lines (the test harness prints its own lines too).
const SAY: &str = "ovm-child: ";
/// How long the parent waits for the child to reach a point.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Mode {
    /// Open the repository and keep it.
    Hold,
    /// Clone `golden` to `half` by copying; say `copying` once data moves.
    Clone,
    /// Import `image` (qcow2) as `half`; say `copying` once data moves.
    Import { image: PathBuf },
    /// Create, grow, rename, clone and delete volumes forever, announcing each operation's
    /// expected outcome before it starts and `committed` after it returns.
    Churn { round: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Orders {
    mode: Mode,
    root: PathBuf,
    location: String,
    pool: PoolId,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{SAY}{line}");
    let _ = out.flush();
}

/// The helper the other tests run in a child process; does nothing when run directly.
#[test]
#[ignore = "helper: runs only inside a child process started by the other tests"]
fn child_process_helper() {
    let Ok(orders) = std::env::var(CHILD_ENV) else {
        return;
    };
    let orders: Orders = serde_json::from_str(&orders).expect("orders");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(child_main(orders));
}

async fn child_main(orders: Orders) {
    let p = FsPlugin::new(FsConfig {
        roots: vec![orders.root.clone()],
        clone_mode: CloneMode::CopyOnly,
        qemu_img: None,
    });
    let repo = p
        .open_repository(&orders.location, Some(orders.pool))
        .await
        .expect("child opens the repository");
    let said = Arc::new(AtomicBool::new(false));
    let copying = {
        let said = said.clone();
        OpContext::with_progress(Arc::new(move |done, total| {
            if done > 0 && done < total && !said.swap(true, Ordering::Relaxed) {
                say("copying");
            }
        }))
    };
    match orders.mode {
        Mode::Hold => {
            say("locked");
            tokio::time::sleep(Duration::from_secs(300)).await;
        }
        Mode::Clone => {
            let vols = p.list_volumes(repo.id).await.expect("list");
            let golden = vols.iter().find(|v| v.name == "golden").expect("golden");
            p.clone_volume(repo.id, golden.id, "half", &copying)
                .await
                .expect("clone");
            say("done");
        }
        Mode::Import { image } => {
            p.import_volume(repo.id, "half", &image, VolumeFormat::Qcow2, &copying)
                .await
                .expect("import");
            say("done");
        }
        Mode::Churn { round } => churn(&p, repo.id, round).await,
    }
}

/// Volume names and sizes: what a repository must show.
type State = BTreeMap<String, u64>;

async fn state_of(p: &FsPlugin, repo: ovm_core::RepoId) -> State {
    p.list_volumes(repo)
        .await
        .expect("list")
        .into_iter()
        .map(|v| (v.name, v.size_bytes))
        .collect()
}

async fn churn(p: &FsPlugin, repo: ovm_core::RepoId, round: u32) {
    let mut state = state_of(p, repo).await;
    let mut ids: BTreeMap<String, ovm_core::VolumeId> = p
        .list_volumes(repo)
        .await
        .expect("list")
        .into_iter()
        .map(|v| (v.name, v.id))
        .collect();
    say(&format!(
        "start {}",
        serde_json::to_string(&state).expect("json")
    ));
    for i in 0u64.. {
        let newest = ids.keys().next_back().cloned();
        let oldest = ids.keys().next().cloned();
        let mut next = state.clone();
        let op = match (i % 5, &newest, &oldest) {
            (1, Some(n), _) => {
                let size = next[n] + MIB;
                next.insert(n.clone(), size);
                Op::Grow(n.clone(), size)
            }
            (2, _, Some(o)) if ids.len() > 1 => {
                let to = format!("r{round:02}-{i:05}");
                let size = next.remove(o).expect("known");
                next.insert(to.clone(), size);
                Op::Rename(o.clone(), to)
            }
            (3, Some(n), _) => {
                let to = format!("c{round:02}-{i:05}");
                next.insert(to.clone(), next[n]);
                Op::Clone(n.clone(), to)
            }
            (4, _, Some(o)) if ids.len() > 4 => {
                next.remove(o);
                Op::Delete(o.clone())
            }
            _ => {
                let name = format!("v{round:02}-{i:05}");
                let size = MIB * (1 + i % 7);
                next.insert(name.clone(), size);
                Op::Create(name, size)
            }
        };
        say(&format!(
            "expect {}",
            serde_json::to_string(&next).expect("json")
        ));
        match op {
            Op::Create(name, size) => {
                let v = p
                    .create_volume(repo, &VolumeSpec::raw(&name, size))
                    .await
                    .expect("create");
                if let VolumeAccess::Path { path, .. } =
                    p.volume_access(repo, v.id).await.expect("access")
                {
                    common::write_pattern(&path, 0, 64 << 10, i as u8);
                }
                ids.insert(name, v.id);
            }
            Op::Grow(name, size) => {
                p.resize_volume(repo, ids[&name], size, false)
                    .await
                    .expect("grow");
            }
            Op::Rename(from, to) => {
                let id = ids.remove(&from).expect("known");
                p.rename_volume(repo, id, &to).await.expect("rename");
                ids.insert(to, id);
            }
            Op::Clone(from, to) => {
                let v = p
                    .clone_volume(repo, ids[&from], &to, &OpContext::none())
                    .await
                    .expect("clone");
                ids.insert(to, v.id);
            }
            Op::Delete(name) => {
                let id = ids.remove(&name).expect("known");
                p.delete_volume(repo, id).await.expect("delete");
            }
        }
        state = next;
        say("committed");
    }
}

enum Op {
    Create(String, u64),
    Grow(String, u64),
    Rename(String, String),
    Clone(String, String),
    Delete(String),
}

/// A running child and its report lines.
struct ChildProc {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl ChildProc {
    fn spawn(orders: &Orders) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "child_process_helper",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, serde_json::to_string(orders).expect("json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                // The harness prints "test child_process_helper ... " without a line
                // break before the first report, so look for the prefix anywhere.
                if let Some(at) = line.find(SAY)
                    && tx.send(line[at + SAY.len()..].to_string()).is_err()
                {
                    return;
                }
            }
        });
        ChildProc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a report line starting with `prefix`.
    fn wait_for(&mut self, prefix: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.starts_with(prefix);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("child never said {prefix:?}; said {:?}", self.seen);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    panic!(
                        "child ended ({status:?}) before saying {prefix:?}; said {:?}",
                        self.seen
                    );
                }
            }
        }
    }

    /// SIGKILLs the child, then returns everything it said.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("reap");
        assert!(!status.success(), "the child was killed, not finished");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen
    }
}

fn plugin(root: &TestRoot) -> FsPlugin {
    FsPlugin::new(FsConfig::with_roots([root.path.clone()]))
}

/// Makes a repository, lets `prepare` fill it, closes it; returns the orders' common part.
async fn prepared_repo<F, Fut>(root: &TestRoot, prepare: F) -> (String, PoolId)
where
    F: FnOnce(FsPlugin, ovm_core::RepoId) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let p = plugin(root);
    let pool = PoolId::new();
    let location = root.location();
    let repo = p
        .create_repository("crash", &location, Some(pool))
        .await
        .expect("create repository");
    prepare(p.clone(), repo.id).await;
    p.close_repository(repo.id).await.expect("close");
    (location, pool)
}

fn tmp_entries(location: &str) -> usize {
    std::fs::read_dir(Path::new(location).join(".ovm/tmp"))
        .expect("tmp dir")
        .count()
}

/// Ids named by files in `dir` with extension `ext`.
fn ids_in(dir: &Path, ext: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(&format!(".{ext}")).map(str::to_string)
        })
        .collect()
}

/// After reopening: nothing in `.ovm/tmp`, and data files, metadata files and listed
/// volumes name the same ids.
async fn assert_consistent(p: &FsPlugin, repo: ovm_core::RepoId, location: &str) {
    assert_eq!(tmp_entries(location), 0, "opening empties .ovm/tmp");
    let listed: BTreeSet<String> = p
        .list_volumes(repo)
        .await
        .expect("list")
        .iter()
        .map(|v| v.id.to_string())
        .collect();
    let data = ids_in(&Path::new(location).join("VirtualDisks"), "img");
    let meta = ids_in(&Path::new(location).join(".ovm/volumes"), "json");
    assert_eq!(data, listed, "every data file is a listed volume");
    assert_eq!(meta, listed, "every metadata file is a listed volume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_held_across_processes_and_released_when_the_holder_dies() {
    let root = TestRoot::local();
    let (location, pool) = prepared_repo(&root, |_, _| async {}).await;
    let mut child = ChildProc::spawn(&Orders {
        mode: Mode::Hold,
        root: root.path.clone(),
        location: location.clone(),
        pool,
    });
    child.wait_for("locked");
    let child_pid = child.child.id();
    let p = plugin(&root);
    let err = p
        .open_repository(&location, Some(pool))
        .await
        .expect_err("held by the child");
    assert_eq!(err.code(), "invalid_state");
    let text = err.to_string();
    assert!(text.contains("in use by another manager"), "{text}");
    assert!(
        text.contains(&format!("pid {child_pid}")),
        "names the holder: {text}"
    );
    child.kill();
    p.open_repository(&location, Some(pool))
        .await
        .expect("the kernel released the dead holder's lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_killed_midway_leaves_no_half_visible_volume() {
    let root = TestRoot::local();
    let (location, pool) = prepared_repo(&root, |p, repo| async move {
        let golden = p
            .create_volume(repo, &VolumeSpec::raw("golden", 4 * GIB))
            .await
            .expect("golden");
        let VolumeAccess::Path { path, .. } =
            p.volume_access(repo, golden.id).await.expect("access")
        else {
            panic!("raw file expected");
        };
        spread_data(&path, 768 * MIB, 4 * MIB, 4 * MIB);
    })
    .await;
    let mut child = ChildProc::spawn(&Orders {
        mode: Mode::Clone,
        root: root.path.clone(),
        location: location.clone(),
        pool,
    });
    child.wait_for("copying");
    let said = child.kill();
    assert!(
        !said.contains(&"done".to_string()),
        "killed before the clone ended"
    );
    assert!(
        tmp_entries(&location) > 0,
        "the killed clone left its partial copy"
    );

    let p = plugin(&root);
    let repo = p
        .open_repository(&location, Some(pool))
        .await
        .expect("reopen");
    let names: Vec<String> = p
        .list_volumes(repo.id)
        .await
        .expect("list")
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(
        names,
        vec!["golden".to_string()],
        "no half-made clone visible"
    );
    assert!(p.recovery(repo.id).expect("recovery").temp_files_removed >= 1);
    assert_consistent(&p, repo.id, &location).await;
    let golden = p.list_volumes(repo.id).await.expect("list")[0].id;
    p.clone_volume(repo.id, golden, "half", &OpContext::none())
        .await
        .expect("the name is free after recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_midway_leaves_no_volume_and_no_running_qemu_img() {
    if !have_qemu_img("an_import_killed_midway_leaves_no_volume_and_no_running_qemu_img") {
        return;
    }
    let root = TestRoot::local();
    let work = tempfile::tempdir().expect("work dir");
    let image = work.path().join("big.qcow2");
    let raw = work.path().join("big.raw");
    std::fs::File::create(&raw)
        .and_then(|f| f.set_len(2 * GIB))
        .expect("raw");
    spread_data(&raw, 768 * MIB, 4 * MIB, 4 * MIB);
    common::run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().expect("utf-8"),
            image.to_str().expect("utf-8"),
        ],
    )
    .expect("qcow2");
    std::fs::remove_file(&raw).expect("rm raw");
    let (location, pool) = prepared_repo(&root, |_, _| async {}).await;
    let mut child = ChildProc::spawn(&Orders {
        mode: Mode::Import {
            image: image.clone(),
        },
        root: root.path.clone(),
        location: location.clone(),
        pool,
    });
    child.wait_for("copying");
    child.kill();

    // qemu-img dies with the manager that started it (parent-death signal).
    let deadline = Instant::now() + Duration::from_secs(5);
    while qemu_img_writing_into(&location) {
        assert!(
            Instant::now() < deadline,
            "qemu-img outlived the killed manager"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let p = plugin(&root);
    let repo = p
        .open_repository(&location, Some(pool))
        .await
        .expect("reopen");
    assert!(p.list_volumes(repo.id).await.expect("list").is_empty());
    assert_consistent(&p, repo.id, &location).await;
}

/// True while some qemu-img process has `location` on its command line.
fn qemu_img_writing_into(location: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.starts_with("qemu-img") && c.contains(location)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_kill_9_at_arbitrary_moments() {
    const ROUNDS: u32 = 16;
    let root = TestRoot::local();
    let (location, pool) = prepared_repo(&root, |_, _| async {}).await;
    let mut in_flight_kills = 0;
    let mut operations = 0;
    for round in 0..ROUNDS {
        let mut child = ChildProc::spawn(&Orders {
            mode: Mode::Churn { round },
            root: root.path.clone(),
            location: location.clone(),
            pool,
        });
        child.wait_for("committed");
        // Spread the kills over different moments of different operations.
        std::thread::sleep(Duration::from_millis(3 + u64::from(round * 29 % 120)));
        let said = child.kill();

        let start: State = said
            .iter()
            .find_map(|l| l.strip_prefix("start "))
            .map(|s| serde_json::from_str(s).expect("json"))
            .expect("start line");
        let mut committed = start;
        let mut pending: Option<State> = None;
        for line in &said {
            if let Some(s) = line.strip_prefix("expect ") {
                pending = Some(serde_json::from_str(s).expect("json"));
            } else if line == "committed" {
                committed = pending.take().expect("committed follows expect");
                operations += 1;
            }
        }

        let p = plugin(&root);
        let repo = p
            .open_repository(&location, Some(pool))
            .await
            .expect("reopen after kill -9");
        let actual = state_of(&p, repo.id).await;
        match &pending {
            None => assert_eq!(actual, committed, "round {round}: after the last commit"),
            Some(next) => {
                in_flight_kills += 1;
                assert!(
                    actual == committed || actual == *next,
                    "round {round}: killed during an operation, the repository shows \
                     neither the state before ({committed:?}) nor after ({next:?}) it: \
                     {actual:?}"
                );
            }
        }
        assert_consistent(&p, repo.id, &location).await;
        p.close_repository(repo.id).await.expect("close");
    }
    println!(
        "{operations} operations committed; {in_flight_kills} of {ROUNDS} kills landed inside one"
    );
    assert!(
        operations >= u64::from(ROUNDS),
        "the children did work before dying"
    );
}
