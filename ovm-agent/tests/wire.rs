//! The agent's HTTPS surface against hostile and mistaken callers, in this process.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ovm_agent::protocol::{Call, Reply};
use ovm_agent::{AgentClient, Identity, RemoteHypervisor};
use ovm_core::hypervisor::{VmConfig, VmEventKind};
use ovm_core::model::{BootSource, VmSpec};
use ovm_core::{Error, Hypervisor, VmId};
use support::{PASSWORD, endpoint, in_process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn raw_client(ep: &ovm_core::model::AgentEndpoint, id: Option<&Identity>) -> reqwest::Client {
    let tls = ovm_agent::tls::client_config(ep.fingerprint.parse().unwrap(), id).unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

#[tokio::test]
async fn only_the_owner_is_served_and_others_are_told_who_owns_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, ep, owner) = in_process(dir.path(), |_| {}).await;
    let mine = AgentClient::new(&ep, Some(&owner), "s1").unwrap();
    assert!(matches!(mine.call(Call::List).await.unwrap(), Reply::List(l) if l.is_empty()));
    let hello = mine.hello().await.unwrap();
    assert_eq!(hello.owner.unwrap().name, "test-manager");

    let other = Identity::generate("other").unwrap();
    let theirs = AgentClient::new(&ep, Some(&other), "s1").unwrap();
    let e = theirs.call(Call::List).await.unwrap_err().to_string();
    assert!(
        e.contains("owned by manager test-manager") && e.contains("403"),
        "{e}"
    );
    let e = theirs
        .take_ownership(PASSWORD, "thief")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("owned by manager test-manager"), "{e}");
    let anonymous = AgentClient::new(&ep, None, "s1").unwrap();
    let e = anonymous.call(Call::List).await.unwrap_err().to_string();
    assert!(e.contains("no client certificate"), "{e}");

    // A certificate other than the pinned one is not talked to at all.
    let mut wrong = ep.clone();
    wrong.fingerprint = Identity::generate("x").unwrap().fingerprint().to_string();
    let e = AgentClient::new(&wrong, Some(&owner), "s1")
        .unwrap()
        .hello()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not the pinned") && e.contains("unreachable"),
        "{e}"
    );

    // Released by its owner, taken by another.
    mine.release_ownership().await.unwrap();
    theirs.take_ownership(PASSWORD, "second").await.unwrap();
    theirs.call(Call::List).await.unwrap();
    let e = mine.call(Call::List).await.unwrap_err().to_string();
    assert!(e.contains("owned by manager second"), "{e}");
}

#[tokio::test]
async fn junk_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, ep, owner) = in_process(dir.path(), |_| {}).await;
    let http = raw_client(&ep, Some(&owner));
    let url = format!("{}/v1/call", ep.url);
    let post = |body: Vec<u8>| http.post(&url).body(body).send();
    let vm = VmId::new();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "malformed request"),
        (b"[]".to_vec(), 400, "malformed request"),
        (
            format!(
                r#"{{"request_id":"{}","call":{{"op":"start","vm":"{vm}","now":1}}}}"#,
                uuid::Uuid::new_v4()
            )
            .into_bytes(),
            400,
            "unknown field",
        ),
        (
            format!(
                r#"{{"request_id":"{}","call":{{"op":"rm_rf"}}}}"#,
                uuid::Uuid::new_v4()
            )
            .into_bytes(),
            400,
            "unknown variant",
        ),
        (vec![b' '; 2 << 20], 413, ""),
    ];
    for (body, status, says) in cases {
        let resp = post(body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let text = resp.text().await.unwrap();
        assert!(text.contains(says), "{text}");
    }
    let resp = http
        .get(format!("{}/etc/passwd", ep.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    // A definition naming a file outside what the agent serves.
    let client = AgentClient::new(&ep, Some(&owner), "s1").unwrap();
    let mut spec = VmSpec::new("evil", 1, 128);
    spec.boot = BootSource::Kernel {
        kernel: "/etc/shadow".into(),
        initrd: None,
        cmdline: String::new(),
    };
    let e = client
        .call(Call::Define {
            config: Box::new(VmConfig::new(vm, spec)),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidSpec { .. }), "{e}");
    // Nothing was defined, and the agent still serves.
    assert!(matches!(client.call(Call::List).await.unwrap(), Reply::List(l) if l.is_empty()));
}

#[tokio::test]
async fn a_slow_client_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, ep, owner) = in_process(dir.path(), |o| {
        o.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    let mut buf = [0u8; 64];
    // Says nothing: the agent hangs up.
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the agent kept a silent client")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Others are still served.
    AgentClient::new(&ep, Some(&owner), "s1")
        .unwrap()
        .call(Call::List)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retried_request_is_answered_from_its_first_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, ep, owner) = in_process(dir.path(), |_| {}).await;
    let client = AgentClient::new(&ep, Some(&owner), "s1").unwrap();
    let config = VmConfig::new(VmId::new(), VmSpec::new("web", 1, 128));
    let define = || Call::Define {
        config: Box::new(config.clone()),
    };
    let id = uuid::Uuid::new_v4();
    assert_eq!(
        client.call_with_id(id, define()).await.unwrap(),
        Reply::Done
    );
    // The retry: the first outcome, not a second define (which would say it exists).
    assert_eq!(
        client.call_with_id(id, define()).await.unwrap(),
        Reply::Done
    );
    let again = client.call(define()).await.unwrap_err();
    assert!(matches!(again, Error::AlreadyExists { .. }), "{again}");
    let reused = client
        .call_with_id(id, Call::Kill { vm: config.id })
        .await
        .unwrap_err()
        .to_string();
    assert!(reused.contains("was used for define"), "{reused}");
}

/// Forwards connections to `to` until cut; a cut closes every connection at once.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(to: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, rx) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = rx.clone();
                rx.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn events_resume_after_the_stream_is_cut_mid_burst() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, ep, owner) = in_process(dir.path(), |o| {
        o.sim_address = "cpus=64,memory_mib=65536".into();
    })
    .await;
    let proxy = Proxy::start(agent.addr).await;
    let via_proxy = endpoint(proxy.addr, agent.fingerprint);
    let remote =
        RemoteHypervisor::connect(AgentClient::new(&via_proxy, Some(&owner), "s1").unwrap())
            .await
            .unwrap();
    let mut events = remote.subscribe();
    let direct = Arc::new(AgentClient::new(&ep, Some(&owner), "s1").unwrap());
    const N: usize = 40;
    let mut vms = Vec::new();
    for i in 0..N {
        let config = VmConfig::new(VmId::new(), VmSpec::new(format!("v{i}"), 1, 64));
        direct
            .call(Call::Define {
                config: Box::new(config.clone()),
            })
            .await
            .unwrap();
        vms.push(config.id);
    }
    let burst = {
        let (direct, vms) = (direct.clone(), vms.clone());
        tokio::spawn(async move {
            for vm in vms {
                direct.call(Call::Start { vm }).await.unwrap();
            }
        })
    };
    let mut seen = std::collections::HashMap::<VmId, usize>::new();
    let mut cuts = 0;
    while seen.values().sum::<usize>() < N {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("events stopped coming")
            .unwrap();
        if ev.kind == VmEventKind::Started {
            *seen.entry(ev.vm).or_default() += 1;
        }
        // Cut twice in the middle of the burst.
        if cuts < 2 && seen.len() >= 10 * (cuts + 1) {
            proxy.cut();
            cuts += 1;
        }
    }
    burst.await.unwrap();
    assert_eq!(cuts, 2);
    assert_eq!(seen.len(), N, "every start reported");
    assert!(
        seen.values().all(|n| *n == 1),
        "none reported twice: {seen:?}"
    );
    // Nothing more arrives: no duplicates after the last.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err()
    );
}

/// Serves one canned HTTPS answer to every request, with the given identity.
async fn canned_agent(body: &'static str) -> ovm_core::model::AgentEndpoint {
    let id = Identity::generate("impostor").unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(ovm_agent::tls::server_config(&id).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = endpoint(listener.local_addr().unwrap(), id.fingerprint());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(mut s) = tls.accept(tcp).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    ep
}

#[tokio::test]
async fn an_agent_of_another_protocol_or_none_is_refused_clearly() {
    let newer = canned_agent(
        r#"{"protocol":"2.0","agent":"ovm-agent 9","hypervisor":"kvm","what":"is new"}"#,
    )
    .await;
    let e = AgentClient::new(&newer, None, "s9")
        .unwrap()
        .hello()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("agent protocol 2.0") && e.contains("1.0") && e.contains("s9"),
        "{e}"
    );
    let junk = canned_agent("<html>hello</html>").await;
    let e = AgentClient::new(&junk, None, "s9")
        .unwrap()
        .hello()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not the agent protocol"), "{e}");
    let e = AgentClient::new(&junk, None, "s9")
        .unwrap()
        .call(Call::List)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not the agent protocol"), "{e}");
}
