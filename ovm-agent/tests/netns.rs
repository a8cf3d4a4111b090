//! An agent in a network namespace this test creates, reached over a veth link that the
//! test cuts and restores: the server goes unreachable (its VMs keep their state), calls
//! fail fast naming it, and everything works again when the link is back. Traffic goes
//! only to the namespace's own address.

mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ovm_agent::Identity;
use ovm_core::model::{AgentEndpoint, HypervisorKind, ServerState, VmSpec, VmState};
use ovm_manager::{PoolSpec, ServerSpec};
use support::{PASSWORD, manager, own, wait_for_state};

const T: Duration = Duration::from_secs(30);

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A namespace with one veth link to the host, removed when dropped.
struct Netns {
    name: String,
    host_if: String,
    agent: Option<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        ip(&["link", "del", &self.host_if]);
        ip(&["netns", "del", &self.name]);
    }
}

/// 10.231.N.1 on the host, 10.231.N.2 in the namespace.
fn netns(n: u8) -> Option<Netns> {
    let tag = format!("{}-{n}", std::process::id() % 100_000);
    let ns = Netns {
        name: format!("ovmt{tag}"),
        host_if: format!("ovh{tag}"),
        agent: None,
    };
    let peer = format!("ovp{tag}");
    let host_addr = format!("10.231.{n}.1/24");
    let ns_addr = format!("10.231.{n}.2/24");
    let ok = ip(&["netns", "add", &ns.name])
        && ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])
        && ip(&["link", "set", &peer, "netns", &ns.name])
        && ip(&["addr", "add", &host_addr, "dev", &ns.host_if])
        && ip(&["link", "set", &ns.host_if, "up"])
        && ip(&["-n", &ns.name, "addr", "add", &ns_addr, "dev", &peer])
        && ip(&["-n", &ns.name, "link", "set", &peer, "up"])
        && ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
    ok.then_some(ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_makes_the_server_unreachable_until_it_is_back() {
    let Some(mut ns) = netns(1) else {
        println!("skipped: cannot create a network namespace with a veth link (needs root)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("agent");
    let bin = env!("CARGO_BIN_EXE_ovm-agent");
    let init = Command::new(bin)
        .args(["init", "--state-dir"])
        .arg(&state)
        .env("OVM_AGENT_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(init.status.success());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, bin, "run", "--hypervisor", "sim"])
        .args([
            "--sim",
            "cpus=4,memory_mib=8192",
            "--listen",
            "10.231.1.2:8899",
            "--state-dir",
        ])
        .arg(&state)
        .env("OVM_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    ns.agent = Some(child);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let ep = AgentEndpoint {
        url: "https://10.231.1.2:8899".into(),
        fingerprint: v["fingerprint"].as_str().unwrap().into(),
    };
    let identity = Identity::generate("test-manager").unwrap();
    own(&ep, &identity).await;
    let mgr = manager(&dir.path().join("ovm.db"), &identity).await;
    mgr.create_pool_now(PoolSpec::new("p")).await.unwrap();
    let server = mgr
        .add_server(
            "p",
            ServerSpec::with_agent("far", HypervisorKind::Sim, &ep.url, &ep.fingerprint),
        )
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    let vm = mgr
        .create_vm("p", VmSpec::new("web", 1, 256))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    mgr.vm(vm).start().await.unwrap().wait(T).await.unwrap();

    // Cut the link.
    assert!(ip(&["link", "set", &ns.host_if, "down"]));
    wait_for_state(&mgr, server, ServerState::Unreachable).await;
    assert_eq!(
        mgr.vm(vm).state().unwrap(),
        VmState::Running,
        "not stopped, only unknown"
    );
    let started = Instant::now();
    let err = mgr
        .vm(vm)
        .pause()
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("far") && err.contains("unreachable"), "{err}");
    // A new VM is not placed on an unreachable server.
    let other = mgr
        .create_vm("p", VmSpec::new("db", 1, 256))
        .await
        .unwrap()
        .wait(T)
        .await
        .unwrap();
    assert!(mgr.vm(other).start().await.unwrap().wait(T).await.is_err());

    // Restore it: reachable again, and the VM answers.
    assert!(ip(&["link", "set", &ns.host_if, "up"]));
    wait_for_state(&mgr, server, ServerState::Running).await;
    mgr.vm(vm).pause().await.unwrap().wait(T).await.unwrap();
    assert_eq!(mgr.vm(vm).state().unwrap(), VmState::Paused);
}
