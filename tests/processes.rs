//! Many `ovm` processes on one store, as people use it: a shell loop with `&`, two
//! terminals, a script beside a long job. Every state change is a conditional write on
//! the store, so of racing processes exactly one wins and the others are refused clearly;
//! nothing reported done is lost, nothing runs twice, no server is overcommitted, and a
//! process that dies or stops leaves nothing behind that the next one does not clean up.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use support::{KillVmmsOnDrop, in_parallel, json, ok, ovm, signal, sim_pool, spawn, vmms_under};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn vms(db: &Path) -> Vec<serde_json::Value> {
    json(db, &["vm", "list"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The VMs each simulated host of a store runs, by host file: what really runs, as
/// opposed to what the records say.
fn sim_running(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir.join("sim")) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let running: BTreeSet<String> = state["vms"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v["state"] == "running")
            .map(|(id, _)| id.clone())
            .collect();
        out.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            running,
        );
    }
    out
}

#[test]
fn parallel_creates_are_all_recorded_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    sim_pool(&db, 1, "cpus=8,memory_mib=8192");
    let outs = in_parallel(&db, 24, |i| {
        ["vm", "create", "p", &format!("cv{i}"), "--memory", "64"]
            .map(String::from)
            .to_vec()
    });
    let created: BTreeSet<String> = outs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.status.success())
        .map(|(i, _)| format!("cv{i}"))
        .collect();
    assert_eq!(
        created.len(),
        24,
        "every create succeeds: {:?}",
        outs.iter().map(stderr).collect::<Vec<_>>()
    );
    let names: Vec<String> = vms(&db)
        .iter()
        .map(|v| v["spec"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 24, "no record lost or doubled: {names:?}");
    assert_eq!(names.iter().cloned().collect::<BTreeSet<_>>(), created);
    let jobs = json(&db, &["job", "list", "--limit", "1000"]);
    let creates = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "vm.create" && j["state"] == "completed")
        .count();
    assert_eq!(creates, 24);
}

#[test]
fn parallel_creates_of_one_name_make_one_vm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    sim_pool(&db, 1, "cpus=8,memory_mib=8192");
    let outs = in_parallel(&db, 12, |_| {
        ["vm", "create", "p", "same", "--memory", "64"]
            .map(String::from)
            .to_vec()
    });
    let won: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one create wins");
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
        assert!(
            stderr(o).contains("vm same already exists"),
            "{}",
            stderr(o)
        );
    }
    assert_eq!(vms(&db).len(), 1);
    assert_eq!(json(&db, &["vm", "show", "same"])["spec"]["name"], "same");
}

/// Two processes start the same VM at once, many times over: exactly one start wins each
/// time, the loser is refused naming the VM, and the VM runs on exactly one host.
#[test]
fn parallel_starts_of_one_vm_run_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    sim_pool(&db, 2, "cpus=4,memory_mib=4096");
    ok(&db, &["vm", "create", "p", "s", "--memory", "256"]);
    for trial in 0..50 {
        let outs = in_parallel(&db, 2, |_| ["vm", "start", "s"].map(String::from).to_vec());
        let won = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(
            won,
            1,
            "trial {trial}: {:?}",
            outs.iter().map(stderr).collect::<Vec<_>>()
        );
        let loser = outs.iter().find(|o| !o.status.success()).unwrap();
        assert_eq!(
            loser.status.code(),
            Some(2),
            "trial {trial}: {}",
            stderr(loser)
        );
        assert!(
            stderr(loser).contains("vm s is"),
            "trial {trial}: {}",
            stderr(loser)
        );
        let running: usize = sim_running(dir.path()).values().map(BTreeSet::len).sum();
        assert_eq!(running, 1, "trial {trial}: the VM runs once");
        assert_eq!(json(&db, &["vm", "show", "s"])["state"], "running");
        ok(&db, &["vm", "kill", "s"]);
    }
}

/// Many starts in parallel on a pool that cannot hold them all: the servers fill up to
/// their capacity and not beyond; every start either runs its VM or is refused for
/// capacity.
#[test]
fn parallel_starts_never_overcommit_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    // Two servers of 1 GiB: eight 256 MiB VMs fit, twenty are started.
    sim_pool(&db, 2, "cpus=8,memory_mib=1024");
    for i in 0..20 {
        ok(
            &db,
            &["vm", "create", "p", &format!("v{i}"), "--memory", "256"],
        );
    }
    let outs = in_parallel(&db, 20, |i| {
        ["vm", "start", &format!("v{i}")].map(String::from).to_vec()
    });
    let started = outs.iter().filter(|o| o.status.success()).count();
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(stderr(o).contains("insufficient capacity"), "{}", stderr(o));
    }
    assert_eq!(started, 8, "exactly the capacity is used");
    let running = vms(&db).iter().filter(|v| v["state"] == "running").count();
    assert_eq!(running, started, "every reported start runs");
    for (host, vms) in sim_running(dir.path()) {
        assert!(
            vms.len() <= 4,
            "{host} runs {} VMs of 256 MiB in 1 GiB",
            vms.len()
        );
    }
    for s in json(&db, &["server", "list"]).as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let used: u64 = vms(&db)
            .iter()
            .filter(|v| v["server"] == s["id"] && v["state"] == "running")
            .map(|v| v["spec"]["memory_mib"].as_u64().unwrap())
            .sum();
        assert!(used <= 1024, "server {name} holds {used} MiB");
    }
}

/// Waits until `f` holds, at most `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn job_of(db: &Path, kind: &str) -> Option<serde_json::Value> {
    json(db, &["job", "list", "--limit", "1000"])
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == kind)
        .cloned()
}

/// A long job in one process while other processes open the store, list and work: the
/// long job completes untouched (opening a store used to roll back other processes' live
/// jobs).
#[test]
fn a_long_job_completes_while_other_processes_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    sim_pool(&db, 1, "cpus=8,memory_mib=8192,start_delay_ms=2500");
    ok(&db, &["vm", "create", "p", "slow", "--memory", "64"]);
    let long = spawn(&db, &["vm", "start", "slow"]);
    eventually(10, "the start job to run", || {
        job_of(&db, "vm.start").is_some_and(|j| j["state"] == "running")
    });
    for i in 0..4 {
        ok(&db, &["vm", "list"]);
        ok(&db, &["job", "list"]);
        ok(
            &db,
            &["vm", "create", "p", &format!("other{i}"), "--memory", "64"],
        );
    }
    let out = long.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("started vm slow"));
    assert_eq!(job_of(&db, "vm.start").unwrap()["state"], "completed");
    assert_eq!(json(&db, &["vm", "show", "slow"])["state"], "running");
    assert_eq!(vms(&db).len(), 5);
}

/// SIGKILL of the process running a job: the next process to open the store sees the
/// owner is gone (its pid no longer exists on this host) and rolls the job back; nothing
/// of the start is left, and the VM can be started again.
#[test]
fn a_killed_owners_job_is_rolled_back_by_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    sim_pool(&db, 1, "cpus=8,memory_mib=8192,start_delay_ms=3000");
    ok(&db, &["vm", "create", "p", "v", "--memory", "64"]);
    let owner = spawn(&db, &["vm", "start", "v"]);
    eventually(10, "the start job to run", || {
        job_of(&db, "vm.start").is_some_and(|j| j["state"] == "running")
    });
    signal(owner.id() as i32, "KILL");
    let out = owner.wait_with_output().unwrap();
    assert!(!out.status.success());
    // The next command, at once (no lease expiry to wait for on the same host).
    let job = job_of(&db, "vm.start").unwrap();
    assert_eq!(job["state"], "rolled_back", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("ended before it finished"),
        "{job}"
    );
    assert_eq!(json(&db, &["vm", "show", "v"])["state"], "stopped");
    let running: usize = sim_running(dir.path()).values().map(BTreeSet::len).sum();
    assert_eq!(running, 0);
    ok(&db, &["vm", "start", "v"]);
    assert_eq!(json(&db, &["vm", "show", "v"])["state"], "running");
}

/// SIGSTOP of the process running a job, past its lease: another process takes the job
/// over and rolls it back. When the stopped process resumes it must not act as the owner:
/// it gives up (saying it lost its lease), never records the VM as running, and whatever
/// its interrupted backend call left running is stopped by the next process as a stray.
#[test]
fn a_stopped_owner_loses_its_job_and_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    sim_pool(&db, 1, "cpus=8,memory_mib=8192,start_delay_ms=2500");
    ok(&db, &["vm", "create", "p", "v", "--memory", "64"]);
    let mut cmd = support::command(&db, &["vm", "start", "v"]);
    cmd.env("OVM_LEASE_TTL_MS", "1000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let owner = cmd.spawn().unwrap();
    eventually(10, "the start job to run", || {
        job_of(&db, "vm.start").is_some_and(|j| j["state"] == "running")
    });
    signal(owner.id() as i32, "STOP");
    // Alive but silent: while its lease holds, its job is left alone...
    let job = job_of(&db, "vm.start").unwrap();
    assert_eq!(job["state"], "running", "{job}");
    // ...and once the lease has run out, it is taken over.
    std::thread::sleep(Duration::from_millis(1500));
    let job = job_of(&db, "vm.start").unwrap();
    assert_eq!(job["state"], "rolled_back", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("stopped renewing its lease"),
        "{job}"
    );
    signal(owner.id() as i32, "CONT");
    let out = owner.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the fenced process must not report success"
    );
    assert!(stderr(&out).contains("lease"), "{}", stderr(&out));
    // The record says stopped; whatever the resumed backend call started is found and
    // stopped as a stray by the next process.
    assert_eq!(json(&db, &["vm", "show", "v"])["state"], "stopped");
    let running: usize = sim_running(dir.path()).values().map(BTreeSet::len).sum();
    assert_eq!(running, 0, "nothing runs that the store does not know of");
}

/// A KVM VMM killed with SIGKILL while no manager watches: the next command records the
/// VM crashed, with an event, and it can be started again.
#[test]
fn a_vmm_killed_while_nobody_watches_is_recorded_crashed() {
    if !ovm::backends::kvm_available() {
        println!("skipped: /dev/kvm is not usable here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let _guard = KillVmmsOnDrop(dir.path().to_path_buf());
    ok(&db, &["pool", "create", "p"]);
    ok(
        &db,
        &[
            "server",
            "add",
            "p",
            "k",
            "--hypervisor",
            "kvm",
            "--address",
            "local",
        ],
    );
    ok(
        &db,
        &[
            "vm",
            "create",
            "p",
            "g",
            "--memory",
            "32",
            "--test-guest",
            "idle",
        ],
    );
    ok(&db, &["vm", "start", "g"]);
    let pids = vmms_under(dir.path());
    assert_eq!(pids.len(), 1);
    signal(pids[0], "KILL");
    eventually(5, "the VMM to die", || vmms_under(dir.path()).is_empty());
    assert_eq!(json(&db, &["vm", "show", "g"])["state"], "crashed");
    let id = json(&db, &["vm", "show", "g"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let events = json(&db, &["event", "list", "--object", &id]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "vm.crashed"),
        "{events}"
    );
    ok(&db, &["vm", "start", "g"]);
    assert_eq!(json(&db, &["vm", "show", "g"])["state"], "running");
    assert_eq!(vmms_under(dir.path()).len(), 1);
    ok(&db, &["vm", "kill", "g"]);
}

/// Parallel starts of one KVM VM from three processes, 50 times: one wins, the others are
/// refused, and exactly one VMM ever runs — no process shuts down another's VMM.
#[test]
fn parallel_kvm_starts_run_one_vmm() {
    if !ovm::backends::kvm_available() {
        println!("skipped: /dev/kvm is not usable here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let _guard = KillVmmsOnDrop(dir.path().to_path_buf());
    ok(&db, &["pool", "create", "p"]);
    ok(
        &db,
        &[
            "server",
            "add",
            "p",
            "k",
            "--hypervisor",
            "kvm",
            "--address",
            "local",
        ],
    );
    for i in 0..4 {
        ok(
            &db,
            &[
                "vm",
                "create",
                "p",
                &format!("g{i}"),
                "--memory",
                "32",
                "--test-guest",
                "idle",
            ],
        );
    }
    for trial in 0..50 {
        let vm = format!("g{}", trial % 4);
        let outs = in_parallel(&db, 3, |_| ["vm", "start", &vm].map(String::from).to_vec());
        let won = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(
            won,
            1,
            "trial {trial}: {:?}",
            outs.iter().map(stderr).collect::<Vec<_>>()
        );
        for o in outs.iter().filter(|o| !o.status.success()) {
            assert_eq!(o.status.code(), Some(2), "trial {trial}: {}", stderr(o));
        }
        assert_eq!(vmms_under(dir.path()).len(), 1, "trial {trial}: one VMM");
        assert_eq!(json(&db, &["vm", "show", &vm])["state"], "running");
        ok(&db, &["vm", "kill", &vm]);
        eventually(5, "the VMM to end", || vmms_under(dir.path()).is_empty());
    }
    // Parallel starts of different VMs: all run, each once.
    let outs = in_parallel(&db, 4, |i| {
        ["vm", "start", &format!("g{i}")].map(String::from).to_vec()
    });
    assert!(
        outs.iter().all(|o| o.status.success()),
        "{:?}",
        outs.iter().map(stderr).collect::<Vec<_>>()
    );
    assert_eq!(vmms_under(dir.path()).len(), 4);
    assert!(vms(&db).iter().all(|v| v["state"] == "running"));
    let _ = ovm(&db, &["vm", "list"]);
}

/// Set in the worker processes of `long_lived_managers_fill_a_pool_exactly`: the store.
const FILL_WORKER_DB: &str = "OVM_TEST_FILL_WORKER_DB";
/// Worker processes and VMs each creates and starts.
const FILL_WORKERS: usize = 4;
const FILL_VMS_EACH: usize = 40;

/// Long-lived managers in four processes (as Python programs beside each other), each
/// creating and starting its VMs with several clients, fill a pool that has room for
/// exactly all of them: every start succeeds and no server holds more than it can.
/// (Each process places many VMs while following the others through the change feed;
/// a reservation dropped from the index when a record was seen again once let two
/// processes take a server's last slot.) The test re-runs its own binary as the workers.
#[test]
fn long_lived_managers_fill_a_pool_exactly() {
    if let Ok(db) = std::env::var(FILL_WORKER_DB) {
        return fill_worker(Path::new(&db));
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    // 160 VMs of 256 MiB; 20 servers of 2 GiB hold 8 each: exactly room for all.
    sim_pool(&db, 20, "cpus=64,memory_mib=2048");
    let workers: Vec<std::process::Child> = (0..FILL_WORKERS)
        .map(|i| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "long_lived_managers_fill_a_pool_exactly"])
                .args(["--nocapture", "--test-threads", "1"])
                .env(FILL_WORKER_DB, &db)
                .env("OVM_FILL_WORKER_INDEX", i.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "a worker failed: {}", stderr(&out));
    }
    let all = vms(&db);
    assert_eq!(all.len(), FILL_WORKERS * FILL_VMS_EACH);
    assert!(all.iter().all(|v| v["state"] == "running"));
    for s in json(&db, &["server", "list"]).as_array().unwrap() {
        let used: u64 = all
            .iter()
            .filter(|v| v["server"] == s["id"])
            .map(|v| v["spec"]["memory_mib"].as_u64().unwrap())
            .sum();
        assert_eq!(used, 2048, "server {} holds {used} MiB of 2048", s["name"]);
    }
    for (host, running) in sim_running(dir.path()) {
        assert_eq!(running.len(), 8, "{host} runs {} VMs", running.len());
    }
}

/// One worker of `long_lived_managers_fill_a_pool_exactly`: one manager, eight clients.
fn fill_worker(db: &Path) {
    let index: usize = std::env::var("OVM_FILL_WORKER_INDEX")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts = ovm::backends::local_options(db.parent().unwrap(), "fill-worker").unwrap();
        let mgr = ovm::Manager::open(db, opts).await.unwrap();
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..8 {
            let mgr = mgr.clone();
            clients.spawn(async move {
                for k in (c..FILL_VMS_EACH).step_by(8) {
                    let spec = ovm::model::VmSpec::new(format!("w{index}-{k}"), 1, 256);
                    let vm = mgr.create_vm("p", spec).await?.join().await?;
                    mgr.vm(vm).start().await?.join().await?;
                }
                Ok::<_, ovm::Error>(())
            });
        }
        while let Some(r) = clients.join_next().await {
            r.unwrap().unwrap();
        }
        mgr.close().await.unwrap();
    });
}

/// Every file under `dir`, with its size (but for lock files, which name their holder).
fn files_under(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let len = match p.file_name().and_then(|n| n.to_str()) {
                    Some("lock") => 0,
                    _ => e.metadata().map_or(0, |m| m.len()),
                };
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), len);
            }
        }
    }
    out
}

/// A repository `r` holding a template `appliance` whose disk is `mib` MiB of data that
/// does not compress, exported as a raw OVA at `<dir>/appliance.ova`.
fn exported_appliance(dir: &Path, db: &Path, mib: usize) -> std::path::PathBuf {
    let repo_dir = dir.join("repo");
    ok(db, &["pool", "create", "p"]);
    ok(db, &["server", "add", "p", "s"]);
    ok(
        db,
        &[
            "repo",
            "add",
            "p",
            "r",
            repo_dir.to_str().unwrap(),
            "--create",
        ],
    );
    ok(db, &["volume", "create", "r", "base", &format!("{mib}M")]);
    support::record_template(dir, db, "base", "appliance", (1, 256), |path| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<u8> = (0..mib << 17)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        std::fs::write(path, data).unwrap();
    });
    let ova = dir.join("appliance.ova");
    ok(
        db,
        &[
            "ovf",
            "export",
            "appliance",
            "-o",
            ova.to_str().unwrap(),
            "--raw",
        ],
    );
    ova
}

/// SIGKILL of `ovm ovf import` at several moments — as soon as its volume exists, and
/// later while the disk is being written: the next command rolls the job back and the
/// repository holds exactly what it held before, no image and no metadata left (they used
/// to stay, invisible to `volume list` and beyond `volume delete`). An import that
/// finished before the kill is whole.
#[test]
fn a_killed_ovf_import_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let ova = exported_appliance(dir.path(), &db, 192);
    let repo_dir = dir.path().join("repo");
    let mut before = files_under(&repo_dir);
    let mut volumes = 1;
    let mut interrupted = 0;
    for (trial, delay_ms) in [0u64, 0, 20, 60, 150].into_iter().enumerate() {
        let name = format!("copy{trial}");
        let mut child = spawn(
            &db,
            &[
                "ovf",
                "import",
                ova.to_str().unwrap(),
                "--repo",
                "r",
                "--name",
                &name,
            ],
        );
        // Wait for the import's volume to exist in the repository, then a little more.
        let deadline = Instant::now() + Duration::from_secs(20);
        while files_under(&repo_dir).len() <= before.len() {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: no volume appeared"
            );
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(child.id() as i32, "KILL");
        let status = child.wait().unwrap();
        // The next command recovers the dead process's job.
        let templates = json(&db, &["template", "list"]);
        let names: Vec<&str> = templates
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let job = job_of(&db, "ovf.import").expect("the import's job");
        if names.contains(&name.as_str()) {
            // It finished before the kill: whole, and kept.
            assert!(
                status.success() || job["state"] == "completed",
                "trial {trial}: {job}"
            );
            volumes += 1;
            before = files_under(&repo_dir);
            continue;
        }
        interrupted += 1;
        assert_eq!(job["state"], "rolled_back", "trial {trial}: {job}");
        let vols = json(&db, &["volume", "list", "r"]);
        assert_eq!(
            vols.as_array().unwrap().len(),
            volumes,
            "trial {trial}: no volume of the import is recorded: {vols}"
        );
        assert_eq!(
            files_under(&repo_dir),
            before,
            "trial {trial}: the repository holds what it held"
        );
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} kills landed mid-import"
    );
}
