//! Agents for tests: in this process, or as real `ovm-agent` processes on loopback.
#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ovm_agent::server::{self, AgentOptions, RunningAgent};
use ovm_agent::{AgentClient, Fingerprint, Identity, with_agents};
use ovm_core::ServerId;
use ovm_core::model::{AgentEndpoint, HypervisorKind, ServerState};
use ovm_manager::{Manager, ManagerOptions};

pub const PASSWORD: &str = "correct horse battery";

pub fn endpoint(addr: SocketAddr, fingerprint: Fingerprint) -> AgentEndpoint {
    AgentEndpoint {
        url: format!("https://{addr}"),
        fingerprint: fingerprint.to_string(),
    }
}

/// Takes ownership of the agent at `ep` as `identity`.
pub async fn own(ep: &AgentEndpoint, identity: &Identity) {
    AgentClient::new(ep, Some(identity), "s")
        .unwrap()
        .take_ownership(PASSWORD, "test-manager")
        .await
        .unwrap();
}

/// An agent in this process, simulating a 4-CPU host, owned by `identity`.
pub async fn in_process(
    dir: &Path,
    tweak: impl FnOnce(&mut AgentOptions),
) -> (RunningAgent, AgentEndpoint, Identity) {
    server::set_password(dir, PASSWORD).unwrap();
    let mut opts = AgentOptions::new(dir, HypervisorKind::Sim);
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.sim_address = "cpus=4,memory_mib=8192".into();
    tweak(&mut opts);
    let agent = server::start(opts).await.unwrap();
    let ep = endpoint(agent.addr, agent.fingerprint);
    let identity = Identity::generate("test-manager").unwrap();
    own(&ep, &identity).await;
    (agent, ep, identity)
}

/// A manager on the store at `db` that reaches servers only through agents, as `identity`.
pub async fn manager(db: &Path, identity: &Identity) -> Manager {
    let opts = ManagerOptions {
        initiator: "test".into(),
        connectors: with_agents(Vec::new(), identity),
        ..ManagerOptions::default()
    };
    Manager::open(db, opts).await.unwrap()
}

/// Waits up to 20 s for `server` to be recorded `want`.
pub async fn wait_for_state(mgr: &Manager, server: ServerId, want: ServerState) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = mgr.find_server(server).unwrap().state;
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server is {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port on loopback nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `ovm-agent` process.
pub struct AgentProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub port: u16,
    pub endpoint: AgentEndpoint,
}

impl AgentProcess {
    /// Starts `ovm-agent run` serving a simulated host, its state in `dir`, on `port`.
    pub fn start(dir: &Path, port: u16, sim: &str) -> AgentProcess {
        Self::start_with(dir, port, &["--hypervisor", "sim", "--sim", sim])
    }

    /// Starts `ovm-agent run ARGS…`, its state in `dir`, on `port`.
    pub fn start_with(dir: &Path, port: u16, args: &[&str]) -> AgentProcess {
        let bin = env!("CARGO_BIN_EXE_ovm-agent");
        if !dir.join("password.argon2").exists() {
            let st = Command::new(bin)
                .args(["init", "--state-dir"])
                .arg(dir)
                .env("OVM_AGENT_PASSWORD", PASSWORD)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let mut child = Command::new(bin)
            .arg("run")
            .args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(dir)
            .env("OVM_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let endpoint = AgentEndpoint {
            url: format!("https://{}", v["address"].as_str().unwrap()),
            fingerprint: v["fingerprint"].as_str().unwrap().to_string(),
        };
        AgentProcess {
            child,
            dir: dir.to_path_buf(),
            port,
            endpoint,
        }
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Killed, then started again on the same port with the same state.
    pub fn restart(&mut self, sim: &str) {
        self.restart_with(&["--hypervisor", "sim", "--sim", sim]);
    }

    /// Killed, then `ovm-agent run ARGS…` again on the same port with the same state.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.kill();
        // The port is free again once the process is gone; retry briefly if not yet.
        for _ in 0..50 {
            if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *self = AgentProcess::start_with(&self.dir.clone(), self.port, args);
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
