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
        json(&db, &["vm", "read", "web", "reply/hello"])["value"],
        "world"
    );
    ok(&db, &["vm", "stop", "web"]);

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
fn the_demo_runs_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovm"))
        .args(["demo", "--dir"])
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
    assert!(stdout.contains("demo finished"), "{stdout}");
    assert!(Path::new(&dir.path().join("ovm.db")).exists());
}
