use std::collections::HashMap;

use super::view::Usage;
use super::{Explanation, PlacementPolicy, PlacementRequest, PoolView, ServerVerdict, Verdict};
use crate::id::ServerId;
use crate::model::{PreferredMode, ServerState};
use crate::{Error, Result};

/// The simple best fit: among servers meeting every hard constraint, the one with the most
/// free memory and CPU (weighted), preferred servers first in Auto mode; ties go to the
/// lowest server id.
#[derive(Debug, Clone, Copy, Default)]
pub struct BestFit;

/// Bonus added to a preferred server's score in Auto mode: larger than any score spread.
const PREFERRED_BONUS: f64 = 1000.0;

impl BestFit {
    fn verdicts(&self, view: &PoolView, req: &PlacementRequest) -> Vec<ServerVerdict> {
        let usage = view.usage();
        let groups = group_hosts(view, req);
        let s = &view.policies.placement;
        view.servers
            .iter()
            .map(|srv| {
                let u = usage.get(&srv.id).copied().unwrap_or_default();
                let verdict = match reject_reason(view, req, srv, u, &groups) {
                    Some(reason) => Verdict::Rejected { reason },
                    None => {
                        let mem_cap = srv.memory_mib as f64 * s.memory_overcommit;
                        let cpu_cap = f64::from(srv.cpus) * s.cpu_overcommit;
                        let free_mem =
                            1.0 - (u.memory_mib + req.memory_mib) as f64 / mem_cap.max(1.0);
                        let free_cpu =
                            1.0 - (u.vcpus + u64::from(req.vcpus)) as f64 / cpu_cap.max(1.0);
                        let free_net = 1.0 - srv.net_util.clamp(0.0, 1.0);
                        let mut score = s.memory_weight * free_mem
                            + s.cpu_weight * free_cpu
                            + s.network_weight * free_net;
                        if req.mode == PreferredMode::Auto && req.preferred.contains(&srv.id) {
                            score += PREFERRED_BONUS;
                        }
                        Verdict::Scored { score }
                    }
                };
                ServerVerdict {
                    server: srv.id,
                    name: srv.name.clone(),
                    verdict,
                }
            })
            .collect()
    }
}

/// Servers hosting members of the request's affinity and anti-affinity groups.
struct GroupHosts {
    affinity: Option<ServerId>,
    anti_affinity: Vec<ServerId>,
}

fn group_hosts(view: &PoolView, req: &PlacementRequest) -> GroupHosts {
    let mut g = GroupHosts {
        affinity: None,
        anti_affinity: Vec::new(),
    };
    for vm in view.vms.iter().filter(|v| v.id != req.vm) {
        let Some(server) = vm.server else { continue };
        if req.affinity_group.is_some() && vm.affinity_group == req.affinity_group {
            g.affinity.get_or_insert(server);
        }
        if req.anti_affinity_group.is_some() && vm.anti_affinity_group == req.anti_affinity_group {
            g.anti_affinity.push(server);
        }
    }
    g
}

fn reject_reason(
    view: &PoolView,
    req: &PlacementRequest,
    srv: &super::ServerView,
    u: Usage,
    groups: &GroupHosts,
) -> Option<String> {
    let s = &view.policies.placement;
    if srv.state != ServerState::Running {
        return Some(format!("server is {}", srv.state.as_str()));
    }
    if req.mode == PreferredMode::Manual && !req.preferred.contains(&srv.id) {
        return Some("not a preferred server (manual mode)".into());
    }
    let mem_cap = (srv.memory_mib as f64 * s.memory_overcommit) as u64;
    if u.memory_mib + req.memory_mib > mem_cap {
        return Some(format!(
            "memory: needs {} MiB, {} of {} MiB free",
            req.memory_mib,
            mem_cap.saturating_sub(u.memory_mib),
            mem_cap
        ));
    }
    let cpu_cap = (f64::from(srv.cpus) * s.cpu_overcommit) as u64;
    if u.vcpus + u64::from(req.vcpus) > cpu_cap {
        return Some(format!(
            "cpu: needs {} vCPUs, {} of {} free",
            req.vcpus,
            cpu_cap.saturating_sub(u.vcpus),
            cpu_cap
        ));
    }
    if let Some(net) = req.networks.iter().find(|n| !srv.networks.contains(n)) {
        return Some(format!("not connected to network {net}"));
    }
    if let Some(repo) = req
        .repositories
        .iter()
        .find(|r| !srv.repositories.contains(r))
    {
        return Some(format!("cannot reach repository {repo}"));
    }
    if let Some(host) = groups.affinity
        && host != srv.id
    {
        return Some(format!(
            "affinity group {:?} runs on another server",
            req.affinity_group.as_deref().unwrap_or_default()
        ));
    }
    if groups.anti_affinity.contains(&srv.id) {
        return Some(format!(
            "anti-affinity group {:?} already runs here",
            req.anti_affinity_group.as_deref().unwrap_or_default()
        ));
    }
    None
}

fn best(verdicts: &[ServerVerdict]) -> Option<ServerId> {
    verdicts
        .iter()
        .filter_map(|v| match v.verdict {
            Verdict::Scored { score } => Some((score, v.server)),
            Verdict::Rejected { .. } => None,
        })
        // Highest score; among equals the lowest id, so results never depend on input order.
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
        .map(|(_, id)| id)
}

impl PlacementPolicy for BestFit {
    fn name(&self) -> &str {
        "best-fit"
    }

    fn place(&self, view: &PoolView, request: &PlacementRequest) -> Result<ServerId> {
        let verdicts = self.verdicts(view, request);
        best(&verdicts).ok_or_else(|| no_fit(&verdicts, request))
    }

    fn explain(&self, view: &PoolView, request: &PlacementRequest) -> Explanation {
        let mut servers = self.verdicts(view, request);
        let chosen = best(&servers);
        servers.sort_by(|a, b| match (&a.verdict, &b.verdict) {
            (Verdict::Scored { score: x }, Verdict::Scored { score: y }) => {
                y.total_cmp(x).then_with(|| a.server.cmp(&b.server))
            }
            (Verdict::Scored { .. }, Verdict::Rejected { .. }) => std::cmp::Ordering::Less,
            (Verdict::Rejected { .. }, Verdict::Scored { .. }) => std::cmp::Ordering::Greater,
            _ => a.server.cmp(&b.server),
        });
        Explanation { chosen, servers }
    }
}

/// A capacity error that says why each kind of server was turned down.
fn no_fit(verdicts: &[ServerVerdict], req: &PlacementRequest) -> Error {
    if verdicts.is_empty() {
        return Error::capacity(format!("no servers in the pool to place vm {}", req.vm));
    }
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for v in verdicts {
        if let Verdict::Rejected { reason } = &v.verdict {
            let key = reason.split(':').next().unwrap_or(reason).to_string();
            *reasons.entry(key).or_default() += 1;
        }
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort();
    let summary: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} × {r}")).collect();
    Error::capacity(format!(
        "no server fits vm {} ({} vCPUs, {} MiB): {}",
        req.vm,
        req.vcpus,
        req.memory_mib,
        summary.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::VmId;
    use crate::policy::{ServerView, VmView};

    fn server(n: u128, mem: u64) -> ServerView {
        ServerView {
            id: ServerId::from_u128(n),
            name: format!("s{n}"),
            state: ServerState::Running,
            cpus: 8,
            memory_mib: mem,
            networks: Default::default(),
            repositories: Default::default(),
            net_util: 0.0,
        }
    }

    fn req(mem: u64) -> PlacementRequest {
        PlacementRequest {
            vm: VmId::new(),
            vcpus: 1,
            memory_mib: mem,
            ha: false,
            preferred: vec![],
            mode: PreferredMode::Auto,
            networks: vec![],
            repositories: vec![],
            affinity_group: None,
            anti_affinity_group: None,
        }
    }

    #[test]
    fn picks_most_free_and_explains() {
        let mut view = PoolView {
            servers: vec![server(1, 4096), server(2, 8192)],
            ..Default::default()
        };
        view.vms.push(VmView {
            id: VmId::new(),
            server: Some(ServerId::from_u128(2)),
            vcpus: 1,
            memory_mib: 7000,
            cpu_demand: 1.0,
            ha: false,
            affinity_group: None,
            anti_affinity_group: None,
            last_moved: None,
        });
        let r = req(1024);
        assert_eq!(BestFit.place(&view, &r).unwrap(), ServerId::from_u128(1));
        let e = BestFit.explain(&view, &r);
        assert_eq!(e.chosen, Some(ServerId::from_u128(1)));
        // 2000 MiB does not fit on s2 (1192 free) — rejected with a memory reason.
        let e = BestFit.explain(&view, &req(2000));
        assert!(
            matches!(&e.servers[1].verdict, Verdict::Rejected { reason } if reason.starts_with("memory"))
        );
    }

    #[test]
    fn manual_mode_restricts_and_capacity_error_says_why() {
        let view = PoolView {
            servers: vec![server(1, 4096), server(2, 8192)],
            ..Default::default()
        };
        let mut r = req(1024);
        r.mode = PreferredMode::Manual;
        r.preferred = vec![ServerId::from_u128(1)];
        assert_eq!(BestFit.place(&view, &r).unwrap(), ServerId::from_u128(1));
        let err = BestFit.place(&view, &req(100_000)).unwrap_err();
        assert!(
            matches!(err, Error::Capacity { ref reason } if reason.contains("2 × memory")),
            "{err}"
        );
    }

    #[test]
    fn bursts_spread() {
        let view = PoolView {
            servers: vec![server(1, 4096), server(2, 4096)],
            ..Default::default()
        };
        let reqs: Vec<_> = (0..4).map(|_| req(1024)).collect();
        let placed: Vec<_> = BestFit
            .place_many(&view, &reqs)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let on1 = placed
            .iter()
            .filter(|s| **s == ServerId::from_u128(1))
            .count();
        assert_eq!(on1, 2, "{placed:?}");
    }

    #[test]
    fn anti_affinity_separates() {
        let view = PoolView {
            servers: vec![server(1, 4096), server(2, 4096)],
            ..Default::default()
        };
        let mut reqs: Vec<_> = (0..3).map(|_| req(100)).collect();
        for r in &mut reqs {
            r.anti_affinity_group = Some("db".into());
        }
        let placed = BestFit.place_many(&view, &reqs);
        assert!(placed[0].is_ok() && placed[1].is_ok());
        assert_ne!(placed[0].as_ref().unwrap(), placed[1].as_ref().unwrap());
        assert!(matches!(placed[2], Err(Error::Capacity { .. })));
    }
}
