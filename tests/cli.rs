//! The `ovm` program on a temporary store: the commands a user types, their exit codes
//! and their JSON.

use std::path::Path;
use std::process::{Command, Output};

fn ovm(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovm"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("OVM_DB")
        .output()
        .expect("run ovm")
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = ovm(db, args);
    assert!(
        out.status.success(),
        "ovm {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(db: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(db, &all)).expect("valid JSON")
}

fn user_error(db: &Path, args: &[&str]) -> String {
    let out = ovm(db, args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "ovm {args:?} should fail as a user error"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.starts_with("error: "), "stderr: {err}");
    err
}

#[test]
fn a_pool_of_servers_and_vms_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    ok(&db, &["pool", "create", "prod"]);
    ok(
        &db,
        &[
            "server",
            "add",
            "prod",
            "a",
            "--address",
            "cpus=4,memory_mib=4096",
        ],
    );
    ok(
        &db,
        &[
            "server",
            "add",
            "prod",
            "b",
            "--address",
            "cpus=16,memory_mib=32768",
        ],
    );
    ok(
        &db,
        &[
            "vm", "create", "prod", "web", "--vcpus", "2", "--memory", "2048",
        ],
    );

    let explain = json(&db, &["vm", "start", "web", "--explain"]);
    assert_eq!(explain["servers"].as_array().unwrap().len(), 2);
    let started = json(&db, &["vm", "start", "web"]);
    assert_eq!(started["server"], "b");

    // A separate process sees the same running VM (state lives in the store and the
    // simulated hosts' files).
    let vms = json(&db, &["vm", "list"]);
    assert_eq!(vms[0]["state"], "running");
    ok(&db, &["vm", "pause", "web"]);
    assert_eq!(json(&db, &["vm", "show", "web"])["state"], "paused");
    ok(&db, &["vm", "resume", "web"]);
    ok(&db, &["vm", "send", "web", "hello", "world"]);
    assert_eq!(
        json(&db, &["vm", "read", "web", "hello"])["value"],
        "echo:world"
    );
    ok(&db, &["vm", "stop", "web"]);

    // DRS on a balanced pool proposes nothing.
    assert_eq!(
        json(&db, &["pool", "rebalance", "prod", "--dry-run"]),
        serde_json::json!([])
    );
    assert!(ok(&db, &["pool", "rebalance", "prod", "--dry-run"]).contains("balanced"));
    let human = ok(&db, &["vm", "list"]);
    assert!(
        human.contains("NAME") && human.contains("web") && human.contains("stopped"),
        "{human}"
    );

    let jobs = json(&db, &["job", "list"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["state"] == "completed")
    );
    let first = jobs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        json(&db, &["job", "show", &first[..8]])["id"],
        first.as_str()
    );
    let err = user_error(&db, &["job", "abort", &first]);
    assert!(err.contains("already ended"), "{err}");

    let events = json(&db, &["event", "list", "--object", "web"]);
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "vm.create",
            "vm.start",
            "vm.pause",
            "vm.resume",
            "vm.message",
            "vm.stop"
        ]
    );
}

#[test]
fn user_errors_exit_2_and_say_what_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let err = user_error(&db, &["vm", "show", "ghost"]);
    assert!(err.contains("vm ghost not found"), "{err}");
    ok(&db, &["pool", "create", "p"]);
    let err = user_error(&db, &["pool", "create", "p"]);
    assert!(err.contains("already exists"), "{err}");
    let err = user_error(&db, &["vm", "create", "p", "x", "--vcpus", "0"]);
    assert!(err.contains("vm.vcpus"), "{err}");
    let err = user_error(&db, &["server", "add", "p", "s", "--address", "cpus=many"]);
    assert!(err.contains("server.address"), "{err}");
    let err = user_error(&db, &["vm", "create", "p", "x", "--domain-type", "weird"]);
    assert!(err.contains("domain type"), "{err}");
    // clap's own usage errors are exit code 2 as well.
    assert_eq!(ovm(&db, &["vm", "frobnicate"]).status.code(), Some(2));
}

#[test]
fn the_demo_runs_to_the_end_on_each_backend() {
    let kvm = ovm::backends::kvm_available();
    for backend in ["sim", "auto"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ovm"))
            .args(["demo", "--backend", backend, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("ended rolled_back"), "{stdout}");
        assert!(
            stdout.contains("the guest answered: \"echo:hello from the manager\""),
            "{stdout}"
        );
        assert!(stdout.contains("demo finished"), "{stdout}");
        if backend == "auto" && kvm {
            assert!(stdout.contains("backend: KVM"), "{stdout}");
            assert!(
                stdout.contains("web-00: ovm-guest: cmdline: kv"),
                "guest consoles shown: {stdout}"
            );
        } else if backend == "auto" {
            println!("/dev/kvm is not usable here: the demo ran on the simulator");
        }
        assert!(dir.path().join("ovm.db").exists());
    }
}

/// Pids of the VMMs of a test's store.
fn vmms_under(dir: &Path) -> Vec<i32> {
    ovm_backend_kvm::procfs::processes_mentioning(dir)
}

/// Kills the VMMs under its directory when dropped, so a failing test leaks none.
struct KillVmmsOnDrop(std::path::PathBuf);

impl Drop for KillVmmsOnDrop {
    fn drop(&mut self) {
        for pid in vmms_under(&self.0) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

#[test]
fn kvm_vms_outlive_the_command_that_started_them() {
    if !ovm::backends::kvm_available() {
        println!("skipped: /dev/kvm is not usable here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let _guard = KillVmmsOnDrop(dir.path().to_path_buf());
    ok(&db, &["pool", "create", "p1"]);
    ok(
        &db,
        &[
            "server",
            "add",
            "p1",
            "kvm1",
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
            "p1",
            "g1",
            "--memory",
            "64",
            "--test-guest",
            "kv",
        ],
    );
    assert!(ok(&db, &["vm", "start", "g1"]).contains("started vm g1 on kvm1"));
    // `vm start` has exited; its VM runs on.
    assert_eq!(json(&db, &["vm", "list"])[0]["state"], "running");
    assert_eq!(vmms_under(dir.path()).len(), 1, "one VMM runs");
    // Another command talks to it.
    ok(&db, &["vm", "send", "g1", "hello", "again"]);
    assert_eq!(
        json(&db, &["vm", "read", "g1", "hello"])["value"],
        "echo:again"
    );
    ok(&db, &["vm", "stop", "g1"]);
    assert_eq!(json(&db, &["vm", "show", "g1"])["state"], "stopped");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !vmms_under(dir.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the VMM is still running after `vm stop`"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Storage and packages from the command line: a repository on the local file system,
/// volumes, a template exported to an OVA, inspected, imported back and deployed.
#[test]
fn repositories_volumes_and_ova_round_trip() {
    use ovm::job::JobSpec;
    use ovm::manager::ImportRecord;
    use ovm::model::{DiskSpec, Template, VmSpec};
    use ovm::storage::VolumeAccess;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let repo_dir = dir.path().join("repo");
    ok(&db, &["pool", "create", "p"]);
    ok(&db, &["server", "add", "p", "s"]);
    ok(
        &db,
        &[
            "repo",
            "add",
            "p",
            "r",
            repo_dir.to_str().unwrap(),
            "--create",
        ],
    );
    ok(&db, &["volume", "create", "r", "base", "64M"]);
    let vols = json(&db, &["volume", "list", "r"]);
    assert_eq!(vols[0]["size_bytes"], 64 << 20);

    // A template made through the library, with data in its disk.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mgr = ovm::Manager::open(&db, ovm::backends::local_options(dir.path(), "test"))
            .await
            .unwrap();
        let (repo, plugin) = mgr.storage_for("r").unwrap();
        let base = mgr.find_volume("r", "base").await.unwrap();
        let VolumeAccess::Path { path, .. } = plugin.volume_access(repo.id, base.id).await.unwrap()
        else {
            panic!("fs volumes are paths")
        };
        std::fs::write(&path, vec![0xabu8; 1 << 20]).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(64 << 20).unwrap();
        let mut spec = VmSpec::new("tmpl", 2, 256);
        spec.disks.push(DiskSpec {
            volume: base.id,
            read_only: false,
            device: None,
        });
        let t = Template {
            id: ovm::TemplateId::new(),
            name: "appliance".into(),
            repo: repo.id,
            spec,
            volumes: vec![base.id],
            description: String::new(),
        };
        let rec = ImportRecord {
            pool: repo.pool.unwrap(),
            templates: vec![t],
            assembly: None,
            networks: vec![],
        };
        let m = mgr.clone();
        mgr.run_job(
            JobSpec::new(
                "test.template",
                "make a template",
                None,
                "test",
                &["record"],
            ),
            move |ctx| async move {
                ctx.step("record", m.record_import(&ctx, "record", rec))
                    .await
            },
        )
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
    });

    let ova = dir.path().join("appliance.ova");
    ok(
        &db,
        &["ovf", "export", "appliance", "-o", ova.to_str().unwrap()],
    );
    let summary = json(&db, &["ovf", "inspect", ova.to_str().unwrap()]);
    assert_eq!(summary["virtual_systems"][0]["cpus"], 2);
    assert_eq!(summary["virtual_systems"][0]["memory_mib"], 256);
    assert_eq!(
        summary["virtual_systems"][0]["disks"][0]["capacity_bytes"],
        64 << 20
    );
    assert_eq!(summary["is_collection"], false);

    let imported = json(
        &db,
        &[
            "ovf",
            "import",
            ova.to_str().unwrap(),
            "--repo",
            "r",
            "--name",
            "copy",
        ],
    );
    assert_eq!(imported["templates"][0], "copy");
    let templates = json(&db, &["template", "list"]);
    assert_eq!(templates.as_array().unwrap().len(), 2);
    ok(&db, &["template", "deploy", "copy", "p", "vm1"]);
    assert_eq!(json(&db, &["vm", "show", "vm1"])["spec"]["vcpus"], 2);
    ok(&db, &["vm", "start", "vm1"]);

    // A hostile package is refused as a user error, and the store is unchanged.
    let evil = dir.path().join("evil.ovf");
    std::fs::write(
        &evil,
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]><Envelope/>",
    )
    .unwrap();
    let err = user_error(&db, &["ovf", "inspect", evil.to_str().unwrap()]);
    assert!(err.contains("DOCTYPE"), "{err}");
    let err = user_error(
        &db,
        &["ovf", "import", evil.to_str().unwrap(), "--repo", "r"],
    );
    assert!(err.contains("DOCTYPE"), "{err}");
    assert_eq!(
        json(&db, &["template", "list"]).as_array().unwrap().len(),
        2
    );
}
