//! Reading what `xl` prints: `xl info`, `xl list -v`, `xl list -l` (JSON) and `xl uptime`.
//!
//! The formats are those of Xen 4.17's `xl`; the tests run on output recorded from the
//! test bed (`tests/fixtures/`). `xl list -l` carries each domain's configuration but no
//! run state, so run state comes from `xl list -v`, which also carries the UUID that maps
//! a domain back to its ovm VM.

use std::collections::BTreeMap;
use std::time::Duration;

use ovm_core::model::{DomainType, HypervisorKind, VmState};
use ovm_core::{HostInfo, VmId};
use serde::Deserialize;

use crate::error::XlError;

/// `xl info`: `key : value` lines about the host and the hypervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct XlInfo {
    fields: BTreeMap<String, String>,
    nr_cpus: u32,
    total_memory_mib: u64,
    free_memory_mib: u64,
}

impl XlInfo {
    /// Parses `xl info` output; `nr_cpus`, `total_memory` and `free_memory` must be there.
    pub fn parse(text: &str) -> Result<Self, XlError> {
        const WHAT: &str = "xl info output";
        let mut fields = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some((key, value)) = line.split_once(':') else {
                return Err(XlError::parse(WHAT, format!("line without ':': {line:?}")));
            };
            fields.insert(key.trim().to_string(), value.trim().to_string());
        }
        let number = |key: &str| -> Result<u64, XlError> {
            let v = fields
                .get(key)
                .ok_or_else(|| XlError::parse(WHAT, format!("no {key}")))?;
            v.parse()
                .map_err(|e| XlError::parse(WHAT, format!("{key} = {v:?}: {e}")))
        };
        let nr_cpus = u32::try_from(number("nr_cpus")?)
            .map_err(|e| XlError::parse(WHAT, format!("nr_cpus: {e}")))?;
        let total_memory_mib = number("total_memory")?;
        let free_memory_mib = number("free_memory")?;
        Ok(XlInfo {
            fields,
            nr_cpus,
            total_memory_mib,
            free_memory_mib,
        })
    }

    /// One raw field, e.g. `xen_commandline`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// Physical CPUs.
    pub fn nr_cpus(&self) -> u32 {
        self.nr_cpus
    }

    /// Memory of the machine, MiB.
    pub fn total_memory_mib(&self) -> u64 {
        self.total_memory_mib
    }

    /// Memory not given to any domain, MiB.
    pub fn free_memory_mib(&self) -> u64 {
        self.free_memory_mib
    }

    /// Xen's version, e.g. `4.17.7`.
    pub fn xen_version(&self) -> &str {
        self.field("xen_version").unwrap_or("unknown")
    }

    /// The host name dom0 reports.
    pub fn host(&self) -> &str {
        self.field("host").unwrap_or("")
    }

    /// The virtualisation capabilities (`virt_caps`), e.g. `["pv", "hvm", "hap", ...]`.
    pub fn virt_caps(&self) -> Vec<&str> {
        self.field("virt_caps")
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default()
    }

    fn has_cap(&self, cap: &str) -> bool {
        self.virt_caps().contains(&cap)
    }

    /// Whether HVM-container guests (HVM, PVHVM, PVH) can run: the CPU's virtualisation
    /// extensions (`hvm`) plus a paging mode for them (`hap` or `shadow`). Without them
    /// libxl refuses with "neither hap nor shadow paging available".
    pub fn can_run_hvm(&self) -> bool {
        self.has_cap("hvm") && (self.has_cap("hap") || self.has_cap("shadow"))
    }

    /// Domain types this host can run, in order of preference.
    pub fn domain_types(&self) -> Vec<DomainType> {
        let mut types = Vec::new();
        if self.has_cap("pv") {
            types.push(DomainType::Pv);
        }
        if self.can_run_hvm() {
            types.extend([DomainType::PvHvm, DomainType::Hvm, DomainType::Pvh]);
        }
        types
    }

    /// Whether a domain of this type can be live-migrated away: migration tracks dirty
    /// memory, which for PV guests needs shadow paging and for HVM guests HAP or shadow.
    pub fn can_migrate(&self, domain_type: DomainType) -> bool {
        match domain_type {
            DomainType::Pv => self.has_cap("pv") && self.has_cap("shadow"),
            DomainType::Hvm | DomainType::PvHvm | DomainType::Pvh => self.can_run_hvm(),
        }
    }

    /// The facts ovm keeps about a host.
    pub fn host_info(&self) -> HostInfo {
        HostInfo {
            hostname: self.host().to_string(),
            hypervisor: HypervisorKind::Xen,
            version: self.xen_version().to_string(),
            cpus: self.nr_cpus,
            memory_mib: self.total_memory_mib,
            free_memory_mib: self.free_memory_mib.min(self.total_memory_mib),
        }
    }
}

/// The run state flags of `xl list`: `r`unning, `b`locked, `p`aused, `s`hutdown,
/// `c`rashed, `d`ying, one column each (`-` when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DomainFlags {
    /// On a CPU now.
    pub running: bool,
    /// Waiting for an event.
    pub blocked: bool,
    /// Paused by the toolstack.
    pub paused: bool,
    /// Shut down, not yet destroyed.
    pub shutdown: bool,
    /// Crashed (kept because `on_crash` preserves it).
    pub crashed: bool,
    /// Being destroyed.
    pub dying: bool,
}

impl DomainFlags {
    /// Parses the six-column `State` field, e.g. `-b----`.
    pub fn parse(s: &str) -> Result<Self, XlError> {
        const WHAT: &str = "xl list state flags";
        let cols: Vec<char> = s.chars().collect();
        if cols.len() != 6 {
            return Err(XlError::parse(WHAT, format!("{s:?} is not 6 columns")));
        }
        let mut flags = DomainFlags::default();
        for (i, (c, want)) in cols.iter().zip("rbpscd".chars()).enumerate() {
            let set = match *c {
                '-' => false,
                c if c == want => true,
                other => {
                    return Err(XlError::parse(
                        WHAT,
                        format!("{s:?}: column {i} is {other:?}, expected '-' or {want:?}"),
                    ));
                }
            };
            match i {
                0 => flags.running = set,
                1 => flags.blocked = set,
                2 => flags.paused = set,
                3 => flags.shutdown = set,
                4 => flags.crashed = set,
                _ => flags.dying = set,
            }
        }
        Ok(flags)
    }

    /// The ovm state of a domain with these flags. A domain that is neither running nor
    /// blocked (`------`) is runnable and waiting for a CPU: still running.
    pub fn vm_state(self) -> VmState {
        if self.crashed {
            VmState::Crashed
        } else if self.shutdown || self.dying {
            VmState::Stopping
        } else if self.paused {
            VmState::Paused
        } else {
            VmState::Running
        }
    }
}

/// One row of `xl list -v`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedDomain {
    /// Domain name.
    pub name: String,
    /// Domain id.
    pub domid: u32,
    /// Current memory, MiB.
    pub memory_mib: u64,
    /// Online vCPUs.
    pub vcpus: u32,
    /// Run state flags.
    pub flags: DomainFlags,
    /// CPU time used, seconds (one decimal).
    pub cpu_time_s: f64,
    /// The domain's UUID (ovm's VM id for domains ovm created).
    pub uuid: String,
}

impl ListedDomain {
    /// The ovm VM id this domain carries, if its UUID is one.
    pub fn vm_id(&self) -> Option<VmId> {
        self.uuid.parse().ok()
    }

    /// CPU time as a duration.
    pub fn cpu_time(&self) -> Duration {
        if self.cpu_time_s.is_finite() && self.cpu_time_s > 0.0 {
            Duration::from_secs_f64(self.cpu_time_s)
        } else {
            Duration::ZERO
        }
    }
}

/// Parses `xl list -v` output (header line first).
///
/// Columns are read from the right, because a domain name may contain spaces: `Name`,
/// `ID`, `Mem`, `VCPUs`, `State`, `Time(s)`, `UUID`, `Reason-Code`, `Security Label`.
pub fn parse_list_verbose(text: &str) -> Result<Vec<ListedDomain>, XlError> {
    const WHAT: &str = "xl list -v output";
    let mut out = Vec::new();
    for line in text.lines().map(str::trim_end) {
        if line.trim().is_empty() || line.starts_with("Name ") {
            continue;
        }
        // Byte offsets of the whitespace-separated tokens, so the name keeps its spaces.
        let mut tokens: Vec<(usize, &str)> = Vec::new();
        let mut start = None;
        for (i, c) in line.char_indices() {
            match (c.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    tokens.push((s, &line[s..i]));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            tokens.push((s, &line[s..]));
        }
        if tokens.len() < 9 {
            return Err(XlError::parse(WHAT, format!("short line {line:?}")));
        }
        let n = tokens.len();
        let col = |from_right: usize| tokens[n - from_right].1;
        let domid = number(WHAT, "ID", col(8), line)?;
        let memory_mib = number(WHAT, "Mem", col(7), line)?;
        let vcpus = number(WHAT, "VCPUs", col(6), line)?;
        let flags = DomainFlags::parse(col(5))?;
        let cpu_time_s = number(WHAT, "Time(s)", col(4), line)?;
        let name = line[..tokens[n - 8].0].trim_end().to_string();
        if name.is_empty() {
            return Err(XlError::parse(WHAT, format!("no name in {line:?}")));
        }
        out.push(ListedDomain {
            name,
            domid,
            memory_mib,
            vcpus,
            flags,
            cpu_time_s,
            uuid: col(3).to_string(),
        });
    }
    Ok(out)
}

fn number<T>(what: &'static str, column: &str, value: &str, line: &str) -> Result<T, XlError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| XlError::parse(what, format!("{column} {value:?} in {line:?}: {e}")))
}

/// One domain of `xl list -l`: its id and the configuration libxl holds for it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DomainRecord {
    /// Domain id.
    pub domid: u32,
    /// The domain's configuration as libxl keeps it.
    pub config: DomainRecordConfig,
}

/// The parts of libxl's `libxl_domain_config` that ovm reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DomainRecordConfig {
    /// Create-time info.
    pub c_info: CreateInfo,
    /// Build-time info.
    #[serde(default)]
    pub b_info: BuildInfo,
}

/// libxl's `c_info`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CreateInfo {
    /// `pv`, `hvm` or `pvh`.
    #[serde(rename = "type")]
    pub domain_type: String,
    /// Domain name.
    pub name: String,
    /// Domain UUID (absent for dom0).
    #[serde(default)]
    pub uuid: Option<String>,
}

/// libxl's `b_info` (only what ovm reads).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct BuildInfo {
    /// Most vCPUs.
    #[serde(default)]
    pub max_vcpus: Option<u32>,
    /// Most memory, KiB.
    #[serde(default)]
    pub max_memkb: Option<u64>,
    /// Memory target, KiB.
    #[serde(default)]
    pub target_memkb: Option<u64>,
    /// PV kernel.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Kernel command line.
    #[serde(default)]
    pub cmdline: Option<String>,
}

impl DomainRecord {
    /// The ovm VM id this domain carries, if its UUID is one.
    pub fn vm_id(&self) -> Option<VmId> {
        self.config.c_info.uuid.as_deref()?.parse().ok()
    }
}

/// Parses `xl list -l` output: a JSON array (empty output means no domains).
pub fn parse_list_long(text: &str) -> Result<Vec<DomainRecord>, XlError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|e| XlError::parse("xl list -l output", e.to_string()))
}

/// Parses one domain's uptime from `xl uptime DOMAIN`: the last column is `H:MM:SS`,
/// preceded by `N day,` / `N days,` after a day.
pub fn parse_uptime(text: &str) -> Result<Duration, XlError> {
    const WHAT: &str = "xl uptime output";
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("Name "))
        .ok_or_else(|| XlError::parse(WHAT, "no domain line"))?;
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let hms = tokens
        .last()
        .ok_or_else(|| XlError::parse(WHAT, "empty line"))?;
    let parts: Vec<&str> = hms.split(':').collect();
    let num = |s: &str| -> Result<u64, XlError> {
        s.parse()
            .map_err(|e| XlError::parse(WHAT, format!("{hms:?} in {line:?}: {e}")))
    };
    let seconds = match parts.as_slice() {
        [h, m, s] => num(h)? * 3600 + num(m)? * 60 + num(s)?,
        _ => return Err(XlError::parse(WHAT, format!("{hms:?} is not H:MM:SS"))),
    };
    let days = match tokens.as_slice() {
        [.., d, unit, _] if unit.starts_with("day") => num(d)?,
        _ => 0,
    };
    Ok(Duration::from_secs(days * 86_400 + seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_states() {
        let s = |f: &str| DomainFlags::parse(f).unwrap().vm_state();
        assert_eq!(s("r-----"), VmState::Running);
        assert_eq!(s("-b----"), VmState::Running);
        assert_eq!(s("------"), VmState::Running);
        assert_eq!(s("--p---"), VmState::Paused);
        assert_eq!(s("---s--"), VmState::Stopping);
        assert_eq!(s("----c-"), VmState::Crashed);
        assert_eq!(s("-----d"), VmState::Stopping);
        assert!(DomainFlags::parse("r----").is_err());
        assert!(DomainFlags::parse("x-----").is_err());
        assert!(DomainFlags::parse("-r----").is_err());
    }

    #[test]
    fn names_with_spaces_survive_list_parsing() {
        let text = "Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID                            Reason-Code\tSecurity Label\n\
                    my  odd name                                 7   128     1     -b----       1.5 11111111-2222-3333-4444-555555555555        -                -\n";
        let d = parse_list_verbose(text).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, "my  odd name");
        assert_eq!(d[0].domid, 7);
        assert_eq!(d[0].cpu_time(), Duration::from_millis(1500));
    }

    #[test]
    fn malformed_lists_are_errors_not_panics() {
        for bad in [
            "x 1 2\n",
            "a b c d e f g h i\n",
            "n 1 2 3 rx---- 1.0 u - -\n",
            "n -1 2 3 r----- 1.0 u - -\n",
        ] {
            assert!(parse_list_verbose(bad).is_err(), "{bad:?}");
        }
        assert!(parse_list_long("[{]").is_err());
        assert!(parse_list_long("").unwrap().is_empty());
    }

    #[test]
    fn uptimes_with_days() {
        assert_eq!(
            parse_uptime("Name ID Uptime\ng 3  0:01:02\n").unwrap(),
            Duration::from_secs(62)
        );
        assert_eq!(
            parse_uptime("Name ID Uptime\ng 3  2 days,  1:00:00\n").unwrap(),
            Duration::from_secs(2 * 86_400 + 3600)
        );
        assert_eq!(
            parse_uptime("Name ID Uptime\ng 3  1 day,  0:00:01\n").unwrap(),
            Duration::from_secs(86_401)
        );
        assert!(parse_uptime("Name ID Uptime\n").is_err());
        assert!(parse_uptime("g 3 soon\n").is_err());
    }

    #[test]
    fn info_needs_its_numbers() {
        assert!(XlInfo::parse("host : h\n").is_err());
        assert!(XlInfo::parse("nr_cpus : x\ntotal_memory : 1\nfree_memory : 1\n").is_err());
        let i = XlInfo::parse(
            "nr_cpus : 8\ntotal_memory : 4096\nfree_memory : 1024\nvirt_caps : pv hvm hap shadow\n",
        )
        .unwrap();
        assert_eq!(
            i.domain_types(),
            vec![
                DomainType::Pv,
                DomainType::PvHvm,
                DomainType::Hvm,
                DomainType::Pvh
            ]
        );
        assert!(i.can_migrate(DomainType::Pv));
        assert!(i.can_migrate(DomainType::Hvm));
    }

    #[test]
    fn hvm_without_paging_support_is_not_offered() {
        let i =
            XlInfo::parse("nr_cpus : 1\ntotal_memory : 1\nfree_memory : 1\nvirt_caps : pv hvm\n")
                .unwrap();
        assert_eq!(i.domain_types(), vec![DomainType::Pv]);
        assert!(!i.can_migrate(DomainType::Pv));
    }
}
