//! A server's hypervisor, reached through its agent: every trait call is one agent call,
//! and the agent's event log is followed so the manager's monitor sees what a local
//! backend would report.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ovm_core::hypervisor::{Capabilities, HostInfo, VmConfig, VmEvent, VmEventKind, VmStats};
use ovm_core::model::VmState;
use ovm_core::{Error, Hypervisor, Result, VmId};
use tokio::sync::broadcast;

use super::{AgentClient, Attempts};
use crate::protocol::{Bytes, Call, Hello, Reply};

/// How long one event poll waits on the agent: also how soon a silent network (a cut
/// link) is noticed, within a few seconds more.
const EVENT_WAIT: Duration = Duration::from_secs(5);

/// The hypervisor of a server behind an agent.
pub struct RemoteHypervisor {
    client: AgentClient,
    hello: Hello,
    capabilities: Capabilities,
    events: broadcast::Sender<VmEvent>,
    /// Whether the agent answers: set by the event follower, and by any call answered.
    up: Arc<tokio::sync::watch::Sender<bool>>,
    pump: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RemoteHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHypervisor")
            .field("client", &self.client)
            .field("hypervisor", &self.hello.hypervisor)
            .finish_non_exhaustive()
    }
}

impl Drop for RemoteHypervisor {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl RemoteHypervisor {
    /// Connects: checks the protocol, reads the capabilities, and follows the agent's events
    /// from now on.
    pub async fn connect(client: AgentClient) -> Result<Self> {
        let hello = client.hello().await?;
        let capabilities = match client.call(Call::Capabilities).await? {
            Reply::Capabilities(c) => c,
            other => return Err(unexpected(&client, "capabilities", &other)),
        };
        let (events, _) = broadcast::channel(4096);
        let up = Arc::new(tokio::sync::watch::channel(true).0);
        let pump = tokio::spawn(follow_events(
            client.clone(),
            events.clone(),
            up.clone(),
            hello.epoch.clone(),
            hello.seq,
        ));
        Ok(RemoteHypervisor {
            client,
            hello,
            capabilities,
            events,
            up,
            pump,
        })
    }

    /// What the agent said when connected.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// One call: tried as usual while the agent answers, once and briefly while it is
    /// known not to, so callers fail fast with the server named.
    async fn call(&self, call: Call) -> Result<Reply> {
        let attempts = if *self.up.borrow() {
            Attempts::for_call(&call)
        } else {
            Attempts::quick(&call)
        };
        let r = self
            .client
            .call_tried(uuid::Uuid::new_v4(), call, attempts)
            .await;
        // Any answer, even a refusal, says the agent is back.
        if !r.as_ref().is_err_and(super::is_unreachable) {
            self.up.send_if_modified(|u| !std::mem::replace(u, true));
        }
        r
    }

    async fn done(&self, call: Call) -> Result<()> {
        let name = call.name();
        match self.call(call).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&self.client, name, &other)),
        }
    }
}

fn unexpected(client: &AgentClient, op: &str, reply: &Reply) -> Error {
    Error::backend(
        "agent",
        format!(
            "the agent of server {} answered {op} with {reply:?}",
            client.server
        ),
    )
}

/// Follows the agent's event log, resuming where it left off after a cut connection. When
/// events may have been missed (the agent restarted, or the log overflowed), the VMs'
/// states are read again and what changed is reported as events. Whether the agent
/// answers is published on `up`.
async fn follow_events(
    client: AgentClient,
    tx: broadcast::Sender<VmEvent>,
    up: Arc<tokio::sync::watch::Sender<bool>>,
    mut epoch: String,
    mut since: u64,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let batch = match client.events(&epoch, since, EVENT_WAIT).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(server = %client.server, "agent events: {e}");
                up.send_if_modified(|u| std::mem::replace(u, false));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        up.send_if_modified(|u| !std::mem::replace(u, true));
        backoff = Duration::from_millis(100);
        let restarted = batch.epoch != epoch;
        if restarted || batch.gap {
            tracing::info!(server = %client.server, restarted, "agent events: resynchronising");
            resync(&client, &tx).await;
        }
        for e in batch.events {
            let _ = tx.send(e.event);
        }
        epoch = batch.epoch;
        since = batch.next;
    }
}

/// Reports VMs found crashed or stopped as the events that would have said so.
async fn resync(client: &AgentClient, tx: &broadcast::Sender<VmEvent>) {
    let Ok(Reply::List(vms)) = client.call(Call::List).await else {
        return;
    };
    for (vm, state) in vms {
        let kind = match state {
            VmState::Crashed => VmEventKind::Crashed {
                reason: "found crashed when the agent's events resumed".into(),
            },
            VmState::Stopped => VmEventKind::PoweredOff,
            _ => continue,
        };
        let _ = tx.send(VmEvent { vm, kind });
    }
}

#[async_trait]
impl Hypervisor for RemoteHypervisor {
    fn backend(&self) -> &str {
        self.hello.hypervisor.as_str()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn host_info(&self) -> Result<HostInfo> {
        match self.call(Call::HostInfo).await? {
            Reply::HostInfo(h) => Ok(h),
            other => Err(unexpected(&self.client, "host_info", &other)),
        }
    }

    async fn define(&self, config: &VmConfig) -> Result<()> {
        self.done(Call::Define {
            config: Box::new(config.clone()),
        })
        .await
    }

    async fn undefine(&self, vm: VmId) -> Result<()> {
        self.done(Call::Undefine { vm }).await
    }

    async fn start(&self, vm: VmId) -> Result<()> {
        self.done(Call::Start { vm }).await
    }

    async fn stop(&self, vm: VmId, timeout: Duration) -> Result<()> {
        self.done(Call::Stop {
            vm,
            timeout_ms: timeout.as_millis() as u64,
        })
        .await
    }

    async fn kill(&self, vm: VmId) -> Result<()> {
        self.done(Call::Kill { vm }).await
    }

    async fn pause(&self, vm: VmId) -> Result<()> {
        self.done(Call::Pause { vm }).await
    }

    async fn resume(&self, vm: VmId) -> Result<()> {
        self.done(Call::Resume { vm }).await
    }

    async fn state(&self, vm: VmId) -> Result<VmState> {
        match self.call(Call::State { vm }).await? {
            Reply::State(s) => Ok(s),
            other => Err(unexpected(&self.client, "state", &other)),
        }
    }

    async fn list(&self) -> Result<Vec<(VmId, VmState)>> {
        match self.call(Call::List).await? {
            Reply::List(l) => Ok(l),
            other => Err(unexpected(&self.client, "list", &other)),
        }
    }

    async fn stats(&self, vm: VmId) -> Result<VmStats> {
        match self.call(Call::Stats { vm }).await? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected(&self.client, "stats", &other)),
        }
    }

    async fn console_buffer(&self, vm: VmId) -> Result<Vec<u8>> {
        match self.call(Call::ConsoleBuffer { vm }).await? {
            Reply::Bytes(b) => Ok(b.0),
            other => Err(unexpected(&self.client, "console_buffer", &other)),
        }
    }

    async fn console_write(&self, vm: VmId, input: &[u8]) -> Result<()> {
        self.done(Call::ConsoleWrite {
            vm,
            input: Bytes(input.to_vec()),
        })
        .await
    }

    async fn guest_send(&self, vm: VmId, key: &str, value: &[u8]) -> Result<()> {
        self.done(Call::GuestSend {
            vm,
            key: key.to_string(),
            value: Bytes(value.to_vec()),
        })
        .await
    }

    async fn guest_read(&self, vm: VmId, key: &str) -> Result<Option<Vec<u8>>> {
        match self
            .call(Call::GuestRead {
                vm,
                key: key.to_string(),
            })
            .await?
        {
            Reply::GuestValue(v) => Ok(v.map(|b| b.0)),
            other => Err(unexpected(&self.client, "guest_read", &other)),
        }
    }

    async fn set_vcpus(&self, vm: VmId, vcpus: u32) -> Result<()> {
        self.done(Call::SetVcpus { vm, vcpus }).await
    }

    async fn set_memory(&self, vm: VmId, memory_mib: u64) -> Result<()> {
        self.done(Call::SetMemory { vm, memory_mib }).await
    }

    fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.events.subscribe()
    }

    fn reachability(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.up.subscribe())
    }
}
