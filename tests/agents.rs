//! The `ovm` program managing servers on "other machines": `ovm agent run` processes on
//! loopback, added with `ovm server add --agent`.

mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use support::{command, json, ok, user_error};

const PASSWORD: &str = "agent password 1";

struct Agent {
    child: Child,
    url: String,
    fingerprint: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent(dir: &std::path::Path) -> Agent {
    let bin = env!("CARGO_BIN_EXE_ovm");
    let init = Command::new(bin)
        .args(["agent", "init", "--state-dir"])
        .arg(dir)
        .env("OVM_AGENT_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let mut child = Command::new(bin)
        .args([
            "agent",
            "run",
            "--hypervisor",
            "sim",
            "--sim",
            "cpus=4,memory_mib=8192",
        ])
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    Agent {
        child,
        url: format!("https://{}", v["address"].as_str().unwrap()),
        fingerprint: v["fingerprint"].as_str().unwrap().to_string(),
    }
}

#[test]
fn servers_behind_agents_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(&dir.path().join("agent-a"));
    let db = dir.path().join("m1").join("ovm.db");
    ok(&db, &["--create-db", "pool", "create", "p"]);

    // No fingerprint: shown, not trusted.
    let err = user_error(&db, &["server", "add", "p", "a", "--agent", &a.url]);
    assert!(
        err.contains(&a.fingerprint) && err.contains("--fingerprint"),
        "{err}"
    );
    // No password: the agent cannot be owned.
    let err = user_error(
        &db,
        &[
            "server",
            "add",
            "p",
            "a",
            "--agent",
            &a.url,
            "--fingerprint",
            &a.fingerprint,
        ],
    );
    assert!(err.contains("OVM_AGENT_PASSWORD"), "{err}");
    let add = |db: &std::path::Path| {
        command(
            db,
            &[
                "--json",
                "server",
                "add",
                "p",
                "a",
                "--agent",
                &a.url,
                "--fingerprint",
                &a.fingerprint,
            ],
        )
        .env("OVM_AGENT_PASSWORD", PASSWORD)
        .output()
        .unwrap()
    };
    let out = add(&db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(server["hypervisor"], "sim");
    assert_eq!(server["cpus"], 4);
    assert_eq!(server["agent"]["fingerprint"], a.fingerprint.as_str());

    ok(
        &db,
        &[
            "vm", "create", "p", "web", "--vcpus", "1", "--memory", "512",
        ],
    );
    assert_eq!(json(&db, &["vm", "start", "web"])["server"], "a");
    // Another `ovm` process reaches the VM through the agent too.
    assert_eq!(json(&db, &["vm", "show", "web"])["state"], "running");
    ok(&db, &["vm", "stop", "web"]);

    // A second manager (its own identity) is told who owns the agent.
    let other = dir.path().join("m2").join("ovm.db");
    ok(&other, &["--create-db", "pool", "create", "p"]);
    let out = add(&other);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("owned by manager ovm cli"), "{err}");
}
