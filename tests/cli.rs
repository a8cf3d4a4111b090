//! The `ovm` program on a temporary store: the commands a user types, their exit codes
//! and their JSON.

mod support;

use std::process::Command;

use support::{KillVmmsOnDrop, json, ok, ovm, user_error, vmms_under};

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
    support::record_template(dir.path(), &db, "base", "appliance", (2, 256), |path| {
        std::fs::write(path, vec![0xabu8; 1 << 20]).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(64 << 20).unwrap();
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

/// `ovm job list | head -1`: the reader goes away; the program ends quietly with status 0.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    ok(&db, &["pool", "create", "p"]);
    for i in 0..30 {
        ok(&db, &["pool", "create", &format!("q{i}")]);
    }
    let mut child = support::command(&db, &["job", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read nothing and hang up, as `head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A FIFO (or any file that is not a regular file) is refused as a package at once,
/// instead of waiting forever for a writer.
#[test]
fn a_fifo_is_refused_as_a_package() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    let fifo = dir.path().join("pkg.ova");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let err = user_error(&db, &["ovf", "inspect", fifo.to_str().unwrap()]);
    assert!(err.contains("FIFO"), "{err}");
    ok(&db, &["pool", "create", "p"]);
    let repo = dir.path().join("repo");
    ok(
        &db,
        &["repo", "add", "p", "r", repo.to_str().unwrap(), "--create"],
    );
    let err = user_error(
        &db,
        &["ovf", "import", fifo.to_str().unwrap(), "--repo", "r"],
    );
    assert!(err.contains("FIFO"), "{err}");
    let err = user_error(&db, &["ovf", "inspect", dir.path().to_str().unwrap()]);
    assert!(err.contains("directory"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// One damaged document does not stop every command: listings skip it (saying so), and
/// `store check` names it; `store repair` quarantines it.
#[test]
fn a_damaged_document_is_skipped_named_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    ok(&db, &["pool", "create", "p"]);
    ok(&db, &["pool", "create", "q"]);
    let jobs = json(&db, &["job", "list"]);
    let victim = jobs[0]["id"].as_str().unwrap().to_string();
    let pool_q = json(&db, &["pool", "show", "q"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "UPDATE objects SET data = '{not json' WHERE kind = 'job' AND id = ?1",
            [&victim],
        )
        .unwrap();
        conn.execute(
            "UPDATE objects SET data = '{\"id\": 7}' WHERE kind = 'pool' AND id = ?1",
            [&pool_q],
        )
        .unwrap();
    }
    let out = ovm(&db, &["job", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&victim), "the skip names the document: {err}");
    assert_eq!(json(&db, &["pool", "list"]).as_array().unwrap().len(), 1);
    let check = json(&db, &["store", "check"]);
    let named: Vec<&str> = check
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(
        named.contains(&victim.as_str()) && named.contains(&pool_q.as_str()),
        "{check}"
    );
    let repaired = json(&db, &["store", "repair"]);
    assert_eq!(repaired.as_array().unwrap().len(), 2);
    assert!(
        json(&db, &["store", "check"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let out = ovm(&db, &["job", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "nothing left to skip"
    );
    // The quarantined pool's name is free again.
    ok(&db, &["pool", "create", "q"]);
}

/// `--db` naming a directory that does not exist is refused (a typo must not make a new,
/// empty manager), unless `--create-db` says to make it.
#[test]
fn a_store_in_a_missing_directory_needs_create() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("no/such/dir/ovm.db");
    let err = user_error(&db, &["pool", "list"]);
    assert!(
        err.contains("does not exist") && err.contains("--create-db"),
        "{err}"
    );
    assert!(!dir.path().join("no").exists());
    ok(&db, &["--create-db", "pool", "list"]);
    assert!(db.exists());
}

/// Server addresses are parsed strictly, and one host cannot be two servers.
#[test]
fn server_addresses_are_parsed_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    ok(&db, &["pool", "create", "p"]);
    for (address, says) in [
        ("garbage", "key=value"),
        ("evil=1", "unknown setting"),
        ("cpus=4,cpus=8", "more than once"),
        ("cpus=4294967295", "1..=4096"),
        ("cpus=0", "1..=4096"),
        ("memory_mib=-1", "memory_mib"),
    ] {
        let err = user_error(&db, &["server", "add", "p", "s", "--address", address]);
        assert!(
            err.contains("server.address") && err.contains(says),
            "{address}: {err}"
        );
    }
    assert!(
        json(&db, &["server", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    if ovm::backends::kvm_available() {
        let local = ["--hypervisor", "kvm", "--address", "local"];
        ok(&db, &[&["server", "add", "p", "k1"][..], &local].concat());
        let err = user_error(&db, &[&["server", "add", "p", "k2"][..], &local].concat());
        assert!(err.contains("host of server k1"), "{err}");
        let err = user_error(
            &db,
            &[
                "server",
                "add",
                "p",
                "k3",
                "--hypervisor",
                "kvm",
                "--address",
                "localhost",
            ],
        );
        assert!(err.contains("host of server k1"), "{err}");
        ok(&db, &["server", "remove", "k1"]);
        ok(&db, &[&["server", "add", "p", "k4"][..], &local].concat());
    }
}

/// Names people cannot tell apart by reading them are refused; NFC-equal names are one.
#[test]
fn names_are_normalised_and_invisible_characters_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    for bad in [
        "   ",
        " web",
        "web ",
        "we\u{202E}b",
        "we\u{200B}b",
        "we\u{00A0}b",
        "",
    ] {
        let err = user_error(&db, &["pool", "create", bad]);
        assert!(err.contains("pool.name"), "{bad:?}: {err}");
    }
    ok(&db, &["pool", "create", "caf\u{e9}"]);
    // The same name decomposed (e + combining acute) is the same pool.
    let err = user_error(&db, &["pool", "create", "cafe\u{301}"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        json(&db, &["pool", "show", "cafe\u{301}"])["name"],
        "caf\u{e9}"
    );
}

/// The short ids that tables print are accepted wherever an id is, as git does; an
/// ambiguous prefix is refused, saying so.
#[test]
fn short_ids_from_tables_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    ok(&db, &["pool", "create", "p"]);
    let table = ok(&db, &["pool", "list"]);
    let short = table
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(short.len(), 8);
    assert_eq!(json(&db, &["pool", "show", short])["name"], "p");
    let err = user_error(&db, &["pool", "show", "zzzz"]);
    assert!(err.contains("not found"), "{err}");
}

/// Migrating a VM to the server it runs on says so.
#[test]
fn migrating_to_its_own_server_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ovm.db");
    ok(&db, &["pool", "create", "p"]);
    ok(
        &db,
        &[
            "server",
            "add",
            "p",
            "h1",
            "--address",
            "cpus=4,memory_mib=4096",
        ],
    );
    ok(
        &db,
        &[
            "server",
            "add",
            "p",
            "h2",
            "--address",
            "cpus=4,memory_mib=4096",
        ],
    );
    ok(&db, &["vm", "create", "p", "v", "--memory", "256"]);
    ok(&db, &["vm", "start", "v"]);
    let on = json(&db, &["vm", "show", "v"])["server"]
        .as_str()
        .unwrap()
        .to_string();
    let name = json(&db, &["server", "show", &on])["name"]
        .as_str()
        .unwrap()
        .to_string();
    let err = user_error(&db, &["vm", "migrate", "v", "--to", &name]);
    assert!(
        err.contains(&format!("already runs on server {name}")),
        "{err}"
    );
}
