//! The parsers on real `xl` output, recorded in dom0 of the test bed (Xen 4.17.7 under
//! QEMU TCG) by `OVM_XEN_RECORD_FIXTURES=1 cargo test -p ovm-backend-xen --test testbed`.
//! Facts that change between recordings (domids, UUIDs, times) are checked for
//! consistency rather than value.

use std::path::Path;
use std::time::Duration;

use ovm_backend_xen::parse::{XlInfo, parse_list_long, parse_list_verbose, parse_uptime};
use ovm_core::model::{DomainType, HypervisorKind, VmState};

const GUEST: &str = "ovm-xen-it";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn xl_info_of_xen_under_tcg() {
    let info = XlInfo::parse(&fixture("xl-info.txt")).unwrap();
    assert_eq!(info.host(), "ovm-xen-testbed");
    // The test bed's emulated CPUs (`-smp`, 1 or 2).
    assert!((1..=2).contains(&info.nr_cpus()), "{}", info.nr_cpus());
    assert_eq!(info.total_memory_mib(), 1535);
    assert!(info.free_memory_mib() > 0 && info.free_memory_mib() < 1535);
    assert!(
        info.xen_version().starts_with("4.17."),
        "{}",
        info.xen_version()
    );
    assert_eq!(info.virt_caps(), vec!["pv", "gnttab-v1", "gnttab-v2"]);
    assert_eq!(info.field("xen_scheduler"), Some("credit2"));
    // No VMX under TCG: PV only, and no shadow paging for PV migration.
    assert!(!info.can_run_hvm());
    assert_eq!(info.domain_types(), vec![DomainType::Pv]);
    assert!(!info.can_migrate(DomainType::Pv));
    let host = info.host_info();
    assert_eq!(host.hypervisor, HypervisorKind::Xen);
    assert_eq!(host.cpus, info.nr_cpus());
    assert_eq!(host.memory_mib, 1535);
    assert_eq!(host.free_memory_mib, info.free_memory_mib());
}

#[test]
fn xl_list_v_with_dom0_only() {
    let domains = parse_list_verbose(&fixture("xl-list-v-dom0.txt")).unwrap();
    assert_eq!(domains.len(), 1);
    let d0 = &domains[0];
    assert_eq!(d0.name, "Domain-0");
    assert_eq!(d0.domid, 0);
    assert_eq!(d0.memory_mib, 768);
    assert_eq!(d0.vcpus, 1);
    assert_eq!(d0.uuid, "00000000-0000-0000-0000-000000000000");
    assert!(d0.flags.running, "dom0 runs xl itself");
    assert_eq!(d0.flags.vm_state(), VmState::Running);
    assert!(d0.cpu_time() > Duration::ZERO);
}

#[test]
fn xl_list_v_with_a_running_and_a_paused_guest() {
    for (file, want) in [
        ("xl-list-v-guest.txt", VmState::Running),
        ("xl-list-v-paused.txt", VmState::Paused),
    ] {
        let domains = parse_list_verbose(&fixture(file)).unwrap();
        let g = domains
            .iter()
            .find(|d| d.name == GUEST)
            .unwrap_or_else(|| panic!("{file}: no {GUEST} in {domains:?}"));
        assert!(g.domid > 0, "{file}");
        assert_eq!(g.memory_mib, 128, "{file}");
        assert_eq!(g.vcpus, 1, "{file}");
        assert_eq!(g.flags.vm_state(), want, "{file}: {:?}", g.flags);
        assert!(g.vm_id().is_some(), "{file}: ovm's VM id is the UUID");
    }
}

#[test]
fn xl_list_l_json() {
    let dom0 = parse_list_long(&fixture("xl-list-l-dom0.json")).unwrap();
    assert_eq!(dom0.len(), 1);
    assert_eq!(dom0[0].domid, 0);
    assert_eq!(dom0[0].config.c_info.name, "Domain-0");
    assert_eq!(dom0[0].config.c_info.domain_type, "pv");
    assert_eq!(dom0[0].config.c_info.uuid, None);
    assert_eq!(dom0[0].config.b_info.max_memkb, Some(768 * 1024));

    let records = parse_list_long(&fixture("xl-list-l-guest.json")).unwrap();
    let g = records
        .iter()
        .find(|r| r.config.c_info.name == GUEST)
        .expect("the guest's record");
    assert_eq!(g.config.c_info.domain_type, "pv");
    assert_eq!(g.config.b_info.max_vcpus, Some(1));
    assert_eq!(g.config.b_info.max_memkb, Some(128 * 1024));
    assert_eq!(g.config.b_info.target_memkb, Some(128 * 1024));
    assert_eq!(
        g.config.b_info.kernel.as_deref(),
        Some("/ovm/guest/vmlinuz")
    );
    assert!(
        g.config
            .b_info
            .cmdline
            .as_deref()
            .is_some_and(|c| c.starts_with("console=hvc0")),
        "{:?}",
        g.config.b_info.cmdline
    );
    // The same domain in both listings, joined by domid, carries the same VM id.
    let listed = parse_list_verbose(&fixture("xl-list-v-guest.txt")).unwrap();
    let l = listed.iter().find(|d| d.name == GUEST).unwrap();
    assert_eq!(l.domid, g.domid);
    assert_eq!(l.vm_id(), g.vm_id());
    assert!(g.vm_id().is_some());
}

#[test]
fn xl_uptime_of_a_guest() {
    let up = parse_uptime(&fixture("xl-uptime-guest.txt")).unwrap();
    assert!(
        up > Duration::from_secs(1) && up < Duration::from_secs(3600),
        "{up:?}"
    );
}
