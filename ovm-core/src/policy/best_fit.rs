use super::placer::Placer;
use super::{Explanation, PlacementPolicy, PlacementRequest, PoolView};
use crate::Result;
use crate::id::ServerId;

/// Weighted best fit: among servers meeting every hard constraint (state, preferred
/// servers in Manual mode, memory and vCPU over-commit, networks, repositories, affinity,
/// anti-affinity, HA admission control), the one with the most free memory, vCPU slots
/// and network after placing, weighted by the pool's settings; preferred servers first in
/// Auto mode; ties go to the lowest server id.
///
/// Each call indexes the view once ([`Placer`]); `place_many` reuses that index for the
/// whole burst, so a burst costs about as much per VM as a placement on a prepared index.
#[derive(Debug, Clone, Copy, Default)]
pub struct BestFit;

impl PlacementPolicy for BestFit {
    fn name(&self) -> &str {
        "best-fit"
    }

    fn place(&self, view: &PoolView, request: &PlacementRequest) -> Result<ServerId> {
        Placer::new(view).choose(request)
    }

    fn explain(&self, view: &PoolView, request: &PlacementRequest) -> Explanation {
        Placer::new(view).explain(request)
    }

    fn place_many(&self, view: &PoolView, requests: &[PlacementRequest]) -> Vec<Result<ServerId>> {
        let mut placer = Placer::new(view);
        requests.iter().map(|r| placer.place(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::id::VmId;
    use crate::model::{PreferredMode, ServerState};
    use crate::policy::{ServerView, Verdict, VmView};

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
        view.vms.push(VmView::new(
            VmId::new(),
            Some(ServerId::from_u128(2)),
            1,
            7000,
        ));
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
