//! `ovm agent ...` (this server's agent) and adding a server through its agent.

use std::path::PathBuf;

use ovm::ServerSpec;
use ovm::model::HypervisorKind;
use ovm_agent::{AgentClient, Fingerprint};

use super::{Ctx, user_error};

/// Runs an agent command, with this binary as the embedded VMM.
pub async fn run(cmd: ovm_agent::cli::AgentCommand) -> anyhow::Result<()> {
    let embedded = std::env::current_exe()
        .ok()
        .map(|exe| (exe, vec![ovm::backends::VMM_MODE.to_string()]));
    cmd.run(embedded).await
}

/// Checks the agent at `url` (pinned certificate, protocol, hypervisor), takes ownership
/// of it with the password, and says what server to add.
pub async fn own(
    ctx: &Ctx,
    name: &str,
    url: &str,
    fingerprint: Option<String>,
    password_file: Option<PathBuf>,
    hypervisor: Option<HypervisorKind>,
) -> anyhow::Result<ServerSpec> {
    let url = url.trim_end_matches('/');
    let Some(host_port) = url.strip_prefix("https://") else {
        return Err(user_error(format!(
            "--agent {url}: an agent is reached over https://HOST:PORT"
        )));
    };
    let Some(fingerprint) = fingerprint else {
        let seen = ovm_agent::tls::probe_fingerprint(host_port)
            .await
            .map_err(|e| user_error(format!("--agent {url}: {e}")))?;
        return Err(user_error(format!(
            "the agent at {url} presents certificate {seen}. Check it on that server \
             (`ovm-agent fingerprint`) and, if it matches, add the server again with \
             --fingerprint {seen}"
        )));
    };
    let pinned: Fingerprint = fingerprint
        .parse()
        .map_err(|e| user_error(format!("--fingerprint: {e}")))?;
    let identity = ovm::backends::manager_identity(&ctx.dir)?;
    let endpoint = ovm::model::AgentEndpoint {
        url: url.to_string(),
        fingerprint: pinned.to_string(),
    };
    let client = AgentClient::new(&endpoint, Some(&identity), name)?;
    let hello = client.hello().await?;
    let mine = identity.fingerprint().to_string();
    if hello.owner.as_ref().map(|o| &o.fingerprint) != Some(&mine) {
        let password = match password_file {
            Some(f) => std::fs::read_to_string(&f)
                .map_err(|e| user_error(format!("--password-file {}: {e}", f.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            None => std::env::var("OVM_AGENT_PASSWORD").map_err(|_| {
                user_error(format!(
                    "the agent of {name} must be owned by this manager first: give \
                     --password-file or $OVM_AGENT_PASSWORD"
                ))
            })?,
        };
        client.take_ownership(&password, &manager_name()).await?;
    }
    match hypervisor {
        Some(h) if h != hello.hypervisor => Err(user_error(format!(
            "--hypervisor {h}: the agent at {url} serves {}",
            hello.hypervisor
        ))),
        _ => Ok(ServerSpec::with_agent(
            name,
            hello.hypervisor,
            url,
            pinned.to_string(),
        )),
    }
}

/// How this manager introduces itself to the agents it owns.
fn manager_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("ovm cli {user}@{host}")
}
