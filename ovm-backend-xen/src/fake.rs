//! A recording, simulating stand-in for `xl`, for tests without Xen.
//!
//! [`FakeXl`] keeps a table of domains and answers the `xl` subcommands the backend uses
//! with output in the real formats (the parsers read both alike), so the backend's logic
//! (state mapping, stop-then-destroy, capacity, errors) is exercised in ordinary unit
//! tests. It records every command line, reads configuration files with [`crate::xlcfg`]
//! the way `xl create` does, refuses what libxl refuses with libxl's messages, and lets a
//! test inject failures, crashes and guest-initiated power-offs.

use ovm_core::sync::lock;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::XlError;
use crate::runner::{XlRunner, command_line};
use crate::xlcfg;

/// `xl info` of a host with HVM support (8 CPUs, 16 GiB).
pub const HVM_HOST_INFO: &str = "host                   : fake-xen\n\
release                : 6.1.0-fake\n\
machine                : x86_64\n\
nr_cpus                : 8\n\
virt_caps              : pv hvm hap shadow gnttab-v1 gnttab-v2\n\
total_memory           : 16384\n\
free_memory            : 15360\n\
xen_version            : 4.17.7\n\
xen_caps               : xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_64\n";

/// `xl info` of a host without hardware virtualisation (as Xen under QEMU TCG reports).
pub const PV_ONLY_HOST_INFO: &str = "host                   : fake-xen-tcg\n\
release                : 6.1.0-fake\n\
machine                : x86_64\n\
nr_cpus                : 1\n\
virt_caps              : pv gnttab-v1 gnttab-v2\n\
total_memory           : 1535\n\
free_memory            : 767\n\
xen_version            : 4.17.7\n\
xen_caps               : xen-3.0-x86_64\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    Paused,
    Crashed,
}

#[derive(Debug, Clone)]
struct Domain {
    name: String,
    domid: u32,
    uuid: String,
    xl_type: String,
    memory_mib: u64,
    max_memory_mib: u64,
    vcpus: u32,
    max_vcpus: u32,
    run: Run,
    created: Instant,
}

#[derive(Debug)]
struct State {
    info: String,
    total_mib: u64,
    dom0_mib: u64,
    domains: Vec<Domain>,
    next_domid: u32,
    calls: Vec<String>,
    failures: HashMap<String, String>,
    delays: HashMap<String, Duration>,
    ignore_shutdown: bool,
    console_dir: Option<PathBuf>,
    saved: HashMap<PathBuf, Domain>,
}

/// A simulated `xl` (see the module docs).
#[derive(Debug)]
pub struct FakeXl {
    state: Mutex<State>,
}

fn failed(command: &str, message: impl Into<String>) -> XlError {
    XlError::Failed {
        command: command.to_string(),
        status: "exit status: 1".into(),
        message: message.into(),
    }
}

impl FakeXl {
    /// A host whose `xl info` is `info` (e.g. [`HVM_HOST_INFO`]); dom0 holds 1 GiB less
    /// than the total, or half of it on small hosts.
    pub fn with_info(info: &str) -> Self {
        let total_mib = info
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "total_memory").then(|| v.trim().parse().ok())?
            })
            .unwrap_or(16384);
        let dom0_mib = if total_mib > 4096 {
            1024
        } else {
            total_mib / 2
        };
        FakeXl {
            state: Mutex::new(State {
                info: info.to_string(),
                total_mib,
                dom0_mib,
                domains: Vec::new(),
                next_domid: 1,
                calls: Vec::new(),
                failures: HashMap::new(),
                delays: HashMap::new(),
                ignore_shutdown: false,
                console_dir: None,
                saved: HashMap::new(),
            }),
        }
    }

    /// A host with HVM support.
    pub fn new() -> Self {
        Self::with_info(HVM_HOST_INFO)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic in another test thread must not hide this one's result.
        lock(&self.state)
    }

    /// Every command run so far, as `xl ARGS...` lines.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Makes the next `xl SUBCOMMAND ...` fail with `message` (as libxl would say it).
    pub fn fail_next(&self, subcommand: &str, message: &str) {
        self.lock()
            .failures
            .insert(subcommand.to_string(), message.to_string());
    }

    /// Makes every `xl SUBCOMMAND ...` take `delay` before answering; past the caller's
    /// timeout it ends as a timed-out `xl` does (as `xl shutdown` waiting for a guest
    /// that never acknowledges).
    pub fn delay(&self, subcommand: &str, delay: Duration) {
        self.lock().delays.insert(subcommand.to_string(), delay);
    }

    /// Guests ignore `xl shutdown` (as a guest without PV drivers, or still booting, does).
    pub fn ignore_shutdown(&self, ignore: bool) {
        self.lock().ignore_shutdown = ignore;
    }

    /// Writes `guest-<name>.log` lines into `dir` as guests "boot", like xenconsoled.
    pub fn log_consoles_to(&self, dir: &Path) {
        self.lock().console_dir = Some(dir.to_path_buf());
    }

    /// The guest of domain `name` crashes (kept, as with `on_crash = "preserve"`).
    pub fn crash(&self, name: &str) {
        let mut st = self.lock();
        if let Some(d) = st.domains.iter_mut().find(|d| d.name == name) {
            d.run = Run::Crashed;
        }
    }

    /// The guest of domain `name` powers itself off (its domain is destroyed).
    pub fn guest_poweroff(&self, name: &str) {
        self.lock().domains.retain(|d| d.name != name);
    }

    /// Names of the domains that exist now (dom0 excluded).
    pub fn domain_names(&self) -> Vec<String> {
        self.lock().domains.iter().map(|d| d.name.clone()).collect()
    }

    fn free_mib(st: &State) -> u64 {
        let used: u64 = st.domains.iter().map(|d| d.memory_mib).sum();
        st.total_mib.saturating_sub(st.dom0_mib + used)
    }

    fn info_text(st: &State) -> String {
        let free = Self::free_mib(st);
        st.info
            .lines()
            .map(|l| match l.split_once(':') {
                Some((k, _)) if k.trim() == "free_memory" => format!("{k}: {free}"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    fn has_hvm(st: &State) -> bool {
        st.info.lines().any(|l| {
            l.starts_with("virt_caps")
                && l.split_whitespace().any(|w| w == "hvm")
                && l.split_whitespace().any(|w| w == "hap" || w == "shadow")
        })
    }

    fn find<'a>(st: &'a mut State, command: &str, id: &str) -> Result<&'a mut Domain, XlError> {
        st.domains
            .iter_mut()
            .find(|d| d.name == id || d.domid.to_string() == id)
            .ok_or_else(|| {
                failed(
                    command,
                    format!("{id} is an invalid domain identifier (rc=-6)"),
                )
            })
    }

    fn list_verbose(st: &State, only: Option<&str>) -> String {
        let mut out = String::from(
            "Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID                            Reason-Code\tSecurity Label\n",
        );
        let row = |name: &str,
                   domid: u32,
                   mem: u64,
                   vcpus: u32,
                   state: &str,
                   t: f64,
                   uuid: &str| {
            format!(
                "{name:<40} {domid:>5} {mem:>5} {vcpus:>5}     {state} {t:>9.1} {uuid}        -                -\n"
            )
        };
        if only.is_none() {
            out.push_str(&row(
                "Domain-0",
                0,
                st.dom0_mib,
                1,
                "r-----",
                12.3,
                "00000000-0000-0000-0000-000000000000",
            ));
        }
        for d in &st.domains {
            if only.is_some_and(|o| o != d.name && o != d.domid.to_string()) {
                continue;
            }
            let flags = match d.run {
                Run::Running => "-b----",
                Run::Paused => "--p---",
                Run::Crashed => "----c-",
            };
            let t = d.created.elapsed().as_secs_f64() / 10.0;
            out.push_str(&row(
                &d.name,
                d.domid,
                d.memory_mib,
                d.vcpus,
                flags,
                t,
                &d.uuid,
            ));
        }
        out
    }

    fn list_long(st: &State) -> String {
        let mut items = vec![serde_json::json!({
            "domid": 0,
            "config": {
                "c_info": {"type": "pv", "name": "Domain-0"},
                "b_info": {"max_memkb": st.dom0_mib * 1024, "target_memkb": st.dom0_mib * 1024 - 1}
            }
        })];
        for d in &st.domains {
            items.push(serde_json::json!({
                "domid": d.domid,
                "config": {
                    "c_info": {"type": d.xl_type, "name": d.name, "uuid": d.uuid},
                    "b_info": {
                        "max_vcpus": d.max_vcpus,
                        "max_memkb": d.max_memory_mib * 1024,
                        "target_memkb": d.memory_mib * 1024
                    }
                }
            }));
        }
        serde_json::to_string_pretty(&items).unwrap_or_default() + "\n"
    }

    /// Reads a config file like `xl create` and builds the domain (not yet added).
    fn domain_from_cfg(st: &mut State, command: &str, path: &Path) -> Result<Domain, XlError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| failed(command, format!("Failed to read config file: {e}")))?;
        let cfg = xlcfg::parse(&text).map_err(|e| {
            failed(
                command,
                format!(
                    "{}:{e}\nFailed to parse config: Invalid argument",
                    path.display()
                ),
            )
        })?;
        let get_str = |k: &str| cfg.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let get_num = |k: &str| cfg.get(k).and_then(|v| v.as_number());
        let name =
            get_str("name").ok_or_else(|| failed(command, "Domain name must be specified."))?;
        let xl_type = get_str("type").unwrap_or_else(|| "pv".into());
        if xl_type != "pv" && !Self::has_hvm(st) {
            return Err(failed(
                command,
                "libxl: error: libxl_create.c:46:libxl__domain_create_info_setdefault: neither hap nor shadow paging available",
            ));
        }
        if let Some(kernel) = get_str("kernel")
            && !Path::new(&kernel).exists()
        {
            return Err(failed(
                command,
                format!(
                    "xc: error: panic: xg_dom_core.c:205: failed to open file '{kernel}': No such file or directory: Internal error\n\
                     libxl: error: libxl_dom.c:646:libxl__build_pv: xc_dom_kernel_file failed: No such file or directory"
                ),
            ));
        }
        let memory_mib = get_num("memory").unwrap_or(128).max(1) as u64;
        let vcpus = get_num("vcpus").unwrap_or(1).max(1) as u32;
        let domid = st.next_domid;
        Ok(Domain {
            name,
            domid,
            uuid: get_str("uuid").unwrap_or_else(|| format!("00000000-0000-0000-0000-{domid:012}")),
            xl_type,
            memory_mib,
            max_memory_mib: get_num("maxmem").map_or(memory_mib, |m| m as u64),
            vcpus,
            max_vcpus: get_num("maxvcpus").map_or(vcpus, |m| m as u32),
            run: Run::Running,
            created: Instant::now(),
        })
    }

    fn add_domain(st: &mut State, command: &str, mut d: Domain) -> Result<(), XlError> {
        if st.domains.iter().any(|o| o.name == d.name) {
            return Err(failed(
                command,
                format!(
                    "libxl: error: libxl_domain.c:81:libxl__domain_rename: Domain {}:Domain with name \"{}\" already exists.",
                    st.next_domid, d.name
                ),
            ));
        }
        if d.memory_mib > Self::free_mib(st) {
            return Err(failed(
                command,
                format!(
                    "libxl: error: libxl_create.c:700:libxl__domain_make: Domain {}:domain creation fail: cannot allocate {} MiB",
                    st.next_domid, d.memory_mib
                ),
            ));
        }
        d.domid = st.next_domid;
        d.created = Instant::now();
        st.next_domid += 1;
        if let Some(dir) = &st.console_dir {
            use std::io::Write as _;
            let path = dir.join(format!("guest-{}.log", d.name));
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "OVM-FAKE: {} booted as domain {}", d.name, d.domid);
            }
        }
        st.domains.push(d);
        Ok(())
    }

    fn execute(st: &mut State, command: &str, argv: &[String]) -> Result<String, XlError> {
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["info"] => Ok(Self::info_text(st)),
            ["list", "-v"] => Ok(Self::list_verbose(st, None)),
            ["list", "-v", id] => {
                Self::find(st, command, id)?;
                Ok(Self::list_verbose(st, Some(id)))
            }
            ["list", "-l"] => Ok(Self::list_long(st)),
            ["create", cfg] | ["create", "-p", cfg] => {
                let mut d = Self::domain_from_cfg(st, command, Path::new(cfg))?;
                if a[1] == "-p" {
                    d.run = Run::Paused;
                }
                Self::add_domain(st, command, d)?;
                Ok(String::new())
            }
            ["pause", id] => {
                Self::find(st, command, id)?.run = Run::Paused;
                Ok(String::new())
            }
            ["unpause", id] => {
                Self::find(st, command, id)?.run = Run::Running;
                Ok(String::new())
            }
            ["shutdown", id] | ["shutdown", "-F", id] => {
                let domid = Self::find(st, command, id)?.domid;
                if !st.ignore_shutdown {
                    st.domains.retain(|d| d.domid != domid);
                }
                Ok(String::new())
            }
            ["reboot", id] | ["reboot", "-F", id] => {
                let d = Self::find(st, command, id)?;
                d.domid += 1000;
                d.created = Instant::now();
                Ok(String::new())
            }
            ["destroy", id] => {
                let domid = Self::find(st, command, id)?.domid;
                st.domains.retain(|d| d.domid != domid);
                Ok(String::new())
            }
            ["save", id, path] => {
                let d = Self::find(st, command, id)?.clone();
                std::fs::write(path, format!("fake xl save image of {}\n", d.name)).map_err(
                    |e| {
                        failed(
                            command,
                            format!("Failed to open temp file {path} for writing: {e}"),
                        )
                    },
                )?;
                st.domains.retain(|o| o.domid != d.domid);
                st.saved.insert(PathBuf::from(path), d);
                Ok(String::new())
            }
            ["restore", cfg, path] => {
                let saved = st.saved.get(Path::new(path)).cloned().ok_or_else(|| {
                    failed(
                        command,
                        format!(
                            "Failed to open temp file {path} for reading: No such file or directory"
                        ),
                    )
                })?;
                let mut d = Self::domain_from_cfg(st, command, Path::new(cfg))?;
                d.memory_mib = saved.memory_mib;
                Self::add_domain(st, command, d)?;
                Ok(String::new())
            }
            ["migrate", "-s", "", id, "xl migrate-receive"] => {
                let d = Self::find(st, command, id)?;
                d.domid += 1000;
                Ok(String::new())
            }
            ["migrate", id, host] => {
                let domid = Self::find(st, command, id)?.domid;
                if host.is_empty() {
                    return Err(failed(command, "no host"));
                }
                st.domains.retain(|d| d.domid != domid);
                Ok(String::new())
            }
            ["vcpu-set", "--ignore-host", id, n] => {
                let d = Self::find(st, command, id)?;
                let n: u32 = n
                    .parse()
                    .map_err(|_| failed(command, "Invalid vCPU count"))?;
                if n > d.max_vcpus {
                    return Err(failed(
                        command,
                        "libxl: error: cannot set more vCPUs than the maximum",
                    ));
                }
                d.vcpus = n;
                Ok(String::new())
            }
            ["mem-set", id, m] => {
                let d = Self::find(st, command, id)?;
                let mib: u64 = m
                    .strip_suffix('m')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| failed(command, "invalid memory size"))?;
                if mib > d.max_memory_mib {
                    return Err(failed(
                        command,
                        format!(
                            "libxl: error: libxl_mem.c:278:libxl_set_memory_target: Domain {}:memory_dynamic_max must be less than or equal to memory_static_max",
                            d.domid
                        ),
                    ));
                }
                d.memory_mib = mib;
                Ok(String::new())
            }
            ["uptime", id] => {
                let d = Self::find(st, command, id)?;
                let s = d.created.elapsed().as_secs();
                Ok(format!(
                    "Name                                ID Uptime\n{:<35} {:>2} {:>2}:{:02}:{:02}\n",
                    d.name,
                    d.domid,
                    s / 3600,
                    s / 60 % 60,
                    s % 60
                ))
            }
            _ => Err(failed(
                command,
                format!("fake xl: unsupported command {command}"),
            )),
        }
    }
}

impl Default for FakeXl {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl XlRunner for FakeXl {
    async fn run(&self, args: &[OsString], timeout: Duration) -> Result<String, XlError> {
        let argv: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let command = command_line("xl", args);
        let delay = argv
            .first()
            .and_then(|sub| self.lock().delays.get(sub).copied());
        if let Some(delay) = delay {
            if delay > timeout {
                tokio::time::sleep(timeout).await;
                self.lock().calls.push(command.clone());
                return Err(XlError::TimedOut {
                    command,
                    after: timeout,
                });
            }
            tokio::time::sleep(delay).await;
        }
        let mut st = self.lock();
        st.calls.push(command.clone());
        if let Some(sub) = argv.first()
            && let Some(message) = st.failures.remove(sub)
        {
            return Err(failed(&command, message));
        }
        Self::execute(&mut st, &command, &argv)
    }
}
