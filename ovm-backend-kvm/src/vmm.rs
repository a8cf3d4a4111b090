//! One VM: builds it from a `VmmConfig` (memory, devices, kernel, vCPUs), runs one thread
//! per vCPU, and exposes the lifecycle (pause, resume, stop) and the guest channel. The
//! `ovm-vmm` binary wraps one `Vmm` in a process with a control socket.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vmm_sys_util::signal::Killable;

use crate::arch::x86_64::{boot, layout, loader, mptable, paging, regs::EntryMode};
use crate::devices::guest_channel::{self, ChannelEvent, GuestChannel};
use crate::devices::serial::{self, Console, Serial};
use crate::devices::{Bus, boot_timer, i8042, lock, power, virtio_block};
use crate::error::{Result, VmmError};
use crate::vstate::memory;
use crate::vstate::vcpu::{
    self, RunControl, RunRequest, Vcpu, VcpuContext, VcpuCounters, VcpuState, VcpuStop,
};
use crate::vstate::vm::Vm;

/// Most vCPUs per VM.
pub const MAX_VCPUS: u8 = 64;
/// Most disks per VM (their interrupt lines, 10..=17, stay on the I/O APIC's 24 pins).
pub const MAX_DISKS: usize = 8;
/// Console ring buffer size.
pub const CONSOLE_RING_BYTES: usize = 64 * 1024;

/// How the VM boots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum BootConfig {
    /// A kernel image (ELF with PVH note, vmlinux or bzImage), optional initrd, command line.
    Kernel {
        /// Kernel image.
        kernel: PathBuf,
        /// Initial ramdisk.
        #[serde(default)]
        initrd: Option<PathBuf>,
        /// Command line.
        #[serde(default)]
        cmdline: String,
    },
}

/// A virtio block disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse guest writes.
    #[serde(default)]
    pub read_only: bool,
}

/// Everything needed to build a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmmConfig {
    /// vCPUs.
    pub vcpus: u8,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Boot source.
    pub boot: BootConfig,
    /// Console log file.
    #[serde(default)]
    pub console_log: Option<PathBuf>,
    /// Disks (virtio-mmio block).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// Enter an ELF with both notes through the 32-bit PVH entry, not ovm's 64-bit one.
    #[serde(default)]
    pub prefer_pvh: bool,
}

impl VmmConfig {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(VmmError::invalid(
                "vcpus",
                format!("{} is outside 1..={MAX_VCPUS}", self.vcpus),
            ));
        }
        if self.memory_mib < 8 {
            return Err(VmmError::invalid(
                "memory_mib",
                format!("{} MiB is less than the 8 MiB minimum", self.memory_mib),
            ));
        }
        if self.disks.len() > MAX_DISKS {
            return Err(VmmError::invalid(
                "disks",
                format!("{} is more than {MAX_DISKS}", self.disks.len()),
            ));
        }
        if self.memory_mib > (1 << 22) {
            return Err(VmmError::invalid(
                "memory_mib",
                format!("{} MiB is more than 4 TiB", self.memory_mib),
            ));
        }
        Ok(())
    }
}

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExitReason {
    /// The guest powered off.
    PowerOff,
    /// The guest rebooted (the supervisor decides whether to start it again).
    Reboot,
    /// The guest crashed (triple fault).
    Crash {
        /// What was seen.
        reason: String,
    },
    /// KVM could not run the guest.
    InternalError {
        /// Exit reason and registers.
        detail: String,
    },
    /// Stopped from outside after the graceful stop timed out, or killed.
    Killed,
}

impl From<VcpuStop> for ExitReason {
    fn from(s: VcpuStop) -> Self {
        match s {
            VcpuStop::PowerOff => ExitReason::PowerOff,
            VcpuStop::Reset => ExitReason::Reboot,
            VcpuStop::Crash { reason } => ExitReason::Crash { reason },
            VcpuStop::InternalError { detail } => ExitReason::InternalError { detail },
            VcpuStop::Stopped => ExitReason::Killed,
        }
    }
}

/// What a VM reports as it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum VmmEvent {
    /// vCPUs are running.
    Started,
    /// The guest wrote to the boot-timer port, `boot_us` after the VMM began building it.
    Ready {
        /// Microseconds from VMM start to the ready write.
        boot_us: u64,
    },
    /// Console output.
    Console {
        /// The bytes.
        data: Vec<u8>,
    },
    /// The guest published a message.
    GuestMessage {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// The guest sent something malformed.
    GuestMisbehaved {
        /// What.
        detail: String,
    },
    /// Paused.
    Paused,
    /// Resumed.
    Resumed,
    /// The VM stopped.
    Exit {
        /// Why.
        reason: ExitReason,
    },
}

/// The VM's run state as the VMM sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Built, vCPUs not started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Exited.
    Exited,
}

/// Resource use and counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmmStats {
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Resident set of the whole VMM process (guest memory touched included), bytes.
    pub rss_bytes: u64,
    /// CPU time of the process, nanoseconds.
    pub cpu_time_ns: u64,
    /// Since the VMM began building the VM, milliseconds.
    pub uptime_ms: u64,
    /// Boot time (to the ready port), microseconds, once ready.
    pub boot_us: Option<u64>,
    /// vCPU exits to the VMM.
    pub exits: u64,
    /// Accesses to ports/addresses without a device.
    pub unhandled_io: u64,
    /// Malformed guest channel sends.
    pub guest_misbehaviour: u64,
    /// Console bytes written by the guest.
    pub console_bytes: u64,
}

/// Guest-visible device state, for snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceStates {
    /// COM1.
    pub serial: serial::SerialState,
    /// i8042.
    pub i8042: i8042::I8042,
    /// Boot timer.
    pub boot_timer: boot_timer::BootTimer,
    /// Guest channel.
    pub guest_channel: guest_channel::ChannelState,
    /// Disks.
    pub disks: Vec<virtio_block::BlockState>,
}

struct Lifecycle {
    state: RunState,
    exit: Option<ExitReason>,
    ready: Option<Duration>,
}

/// One VM.
pub struct Vmm {
    started_at: Instant,
    vm: Vm,
    config: VmmConfig,
    vcpus: Mutex<Vec<Vcpu>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    entry: EntryMode,
    control: Arc<RunControl>,
    counters: Arc<VcpuCounters>,
    console: Arc<Console>,
    serial: Arc<Mutex<Serial>>,
    i8042: Arc<Mutex<i8042::I8042>>,
    boot_timer: Arc<Mutex<boot_timer::BootTimer>>,
    channel: Arc<Mutex<GuestChannel>>,
    disks: Vec<Arc<Mutex<virtio_block::VirtioBlock>>>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    life: Arc<(Mutex<Lifecycle>, Condvar)>,
    paused_states: Arc<Mutex<Vec<VcpuState>>>,
    events: Sender<VmmEvent>,
}

fn kernel_entry(mem: &memory::GuestMemoryMmap, config: &VmmConfig) -> Result<EntryMode> {
    let mem_size = config.memory_mib << 20;
    let BootConfig::Kernel {
        kernel,
        initrd,
        cmdline,
    } = &config.boot;
    let loaded = loader::load_kernel(mem, kernel, config.prefer_pvh)?;
    mptable::write(mem, config.vcpus)?;
    let cmdline_len = boot::write_cmdline(mem, &guest_cmdline(cmdline, config.disks.len()))?;
    let initrd = match initrd {
        Some(path) => {
            let size = std::fs::metadata(path)
                .map_err(VmmError::io(format!("initrd {}", path.display())))?
                .len();
            let addr_max = match loaded {
                loader::KernelEntry::Linux64 {
                    header: Some(h), ..
                } => u64::from(h.initrd_addr_max),
                _ => layout::MMIO_GAP_START - 1,
            };
            let addr = boot::initrd_address(mem_size, addr_max, loaded.kernel_end(), size)?;
            Some((addr, loader::load_initrd(mem, path, addr)?))
        }
        None => None,
    };
    match loaded {
        loader::KernelEntry::Pvh { entry, .. } => {
            boot::write_pvh_start_info(mem, mem_size, initrd)?;
            Ok(EntryMode::Pvh { entry })
        }
        loader::KernelEntry::Direct64 { entry, .. } => {
            boot::write_pvh_start_info(mem, mem_size, initrd)?;
            let cr3 = paging::write_identity_tables(mem, paging::MAX_IDENTITY_GIB)?;
            Ok(EntryMode::Direct64 { entry, cr3 })
        }
        loader::KernelEntry::Linux64 { entry, header, .. } => {
            let params = boot::linux_boot_params(header, mem_size, cmdline_len, initrd)?;
            boot::write_boot_params(mem, &params)?;
            let cr3 = paging::write_identity_tables(mem, 1)?;
            Ok(EntryMode::Linux64 { entry, cr3 })
        }
    }
}

/// The command line the guest gets: `cmdline` plus, as Firecracker does, one
/// `virtio_mmio.device=` entry per disk (how Linux finds virtio-mmio devices without a
/// device tree or ACPI), except for disks the caller already described at their address.
fn guest_cmdline(cmdline: &str, disks: usize) -> String {
    let mut line = cmdline.to_string();
    for i in 0..disks {
        let (base, _) = virtio_block::placement(i);
        if line.contains(&format!("@{base:#x}:")) {
            continue;
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&virtio_block::cmdline_entry(i));
    }
    line
}

impl Vmm {
    /// Builds the VM: memory, interrupt controllers, devices, kernel, vCPUs. Nothing runs yet.
    pub fn build(config: VmmConfig, events: Sender<VmmEvent>) -> Result<Arc<Self>> {
        let started_at = Instant::now();
        config.validate()?;
        let trace = BootTrace::from_env(started_at);
        let mem = memory::create(&layout::ram_ranges(config.memory_mib << 20))?;
        trace.mark("memory mapped");
        let vm = Vm::new(mem.clone())?;
        trace.mark("VM, irqchip, PIT, memory slots");
        let entry = kernel_entry(&mem, &config)?;
        trace.mark("kernel, command line, boot tables");

        let log = match &config.console_log {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(VmmError::io(format!("console log {}", path.display())))?,
            ),
            None => None,
        };
        let console_events = events.clone();
        let console = Arc::new(Console::new(
            CONSOLE_RING_BYTES,
            log,
            Some(Box::new(move |data: &[u8]| {
                let _ = console_events.send(VmmEvent::Console {
                    data: data.to_vec(),
                });
            })),
        ));
        let serial = Arc::new(Mutex::new(Serial::new(
            console.clone(),
            Some(vm.irq(serial::IRQ)?),
        )));
        let channel_events = events.clone();
        let channel = Arc::new(Mutex::new(GuestChannel::new(
            mem.clone(),
            Some(vm.irq(guest_channel::IRQ)?),
            Some(Box::new(move |e| {
                let _ = channel_events.send(match e {
                    ChannelEvent::Published(m) => VmmEvent::GuestMessage {
                        key: m.key,
                        value: m.value,
                    },
                    ChannelEvent::Misbehaved { detail } => VmmEvent::GuestMisbehaved { detail },
                });
            })),
        )));
        let i8042 = Arc::new(Mutex::new(i8042::I8042::default()));
        let boot_timer = Arc::new(Mutex::new(boot_timer::BootTimer::default()));

        let bus_err = |e: String| VmmError::invalid("devices", e);
        let mut pio = Bus::new();
        pio.insert(serial::PORT, serial::LEN, serial.clone())
            .map_err(bus_err)?;
        pio.insert(i8042::PORT, i8042::LEN, i8042.clone())
            .map_err(bus_err)?;
        pio.insert(boot_timer::PORT, 1, boot_timer.clone())
            .map_err(bus_err)?;
        pio.insert(
            power::PORT,
            power::LEN,
            Arc::new(Mutex::new(power::ExitPort::default())),
        )
        .map_err(bus_err)?;
        pio.insert(guest_channel::PORT, guest_channel::LEN, channel.clone())
            .map_err(bus_err)?;

        let mut mmio = Bus::new();
        let mut disks = Vec::new();
        for (i, disk) in config.disks.iter().enumerate() {
            let (base, gsi) = virtio_block::placement(i);
            let dev = Arc::new(Mutex::new(virtio_block::VirtioBlock::open(
                &disk.path,
                disk.read_only,
                mem.clone(),
                Some(vm.irq(gsi)?),
            )?));
            mmio.insert(base, layout::VIRTIO_MMIO_SIZE, dev.clone())
                .map_err(bus_err)?;
            disks.push(dev);
        }

        trace.mark("devices");
        let supported = vcpu::supported_cpuid(&vm)?;
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for id in 0..config.vcpus {
            let v = Vcpu::new(&vm, id)?;
            v.configure(&vm, &supported, config.vcpus, (id == 0).then_some(entry))?;
            vcpus.push(v);
        }
        vcpu::install_kick_handler()?;
        trace.mark("vCPUs configured");

        Ok(Arc::new(Vmm {
            started_at,
            vm,
            config,
            vcpus: Mutex::new(vcpus),
            threads: Mutex::new(Vec::new()),
            entry,
            control: Arc::new(RunControl::default()),
            counters: Arc::new(VcpuCounters::default()),
            console,
            serial,
            i8042,
            boot_timer,
            channel,
            disks,
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            life: Arc::new((
                Mutex::new(Lifecycle {
                    state: RunState::Created,
                    exit: None,
                    ready: None,
                }),
                Condvar::new(),
            )),
            paused_states: Arc::new(Mutex::new(Vec::new())),
            events,
        }))
    }

    /// How the boot vCPU enters the guest.
    pub fn entry(&self) -> EntryMode {
        self.entry
    }

    /// The configuration.
    pub fn config(&self) -> &VmmConfig {
        &self.config
    }

    /// Starts one thread per vCPU.
    pub fn start(self: &Arc<Self>) -> Result<()> {
        {
            let mut life = lock(&self.life.0);
            if life.state != RunState::Created {
                return Err(VmmError::InvalidState {
                    state: format!("{:?}", life.state).to_lowercase(),
                    op: "start".into(),
                });
            }
            life.state = RunState::Running;
        }
        let vcpus = std::mem::take(&mut *lock(&self.vcpus));
        let mut threads = lock(&self.threads);
        // Reported before the threads run, so it precedes anything the guest does.
        let _ = self.events.send(VmmEvent::Started);
        for v in vcpus {
            let me = Arc::downgrade(self);
            let life = self.life.clone();
            let started_at = self.started_at;
            let ready_events = self.events.clone();
            let states = self.paused_states.clone();
            let ctx = VcpuContext {
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                control: self.control.clone(),
                counters: self.counters.clone(),
                on_ready: Box::new(move || {
                    let boot = started_at.elapsed();
                    lock(&life.0).ready = Some(boot);
                    let _ = ready_events.send(VmmEvent::Ready {
                        boot_us: boot.as_micros() as u64,
                    });
                }),
                on_pause: Box::new(move |state| {
                    if let Ok(s) = state {
                        lock(&states).push(s);
                    }
                }),
            };
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{}", v.id()))
                .spawn(move || {
                    let stop = v.run(ctx);
                    if let Some(vmm) = me.upgrade() {
                        vmm.vcpu_stopped(stop);
                    }
                })
                .map_err(VmmError::io("spawn vCPU thread"))?;
            threads.push(handle);
        }
        Ok(())
    }

    fn vcpu_stopped(&self, stop: VcpuStop) {
        if stop == VcpuStop::Stopped {
            return;
        }
        self.finish(ExitReason::from(stop));
    }

    /// Records the exit (first one wins), stops the other vCPUs and reports it.
    fn finish(&self, reason: ExitReason) {
        {
            let mut life = lock(&self.life.0);
            if life.exit.is_some() {
                return;
            }
            life.exit = Some(reason.clone());
            life.state = RunState::Exited;
            self.life.1.notify_all();
        }
        self.control.request(RunRequest::Stop);
        self.kick_all();
        self.console.flush();
        let _ = self.events.send(VmmEvent::Exit { reason });
    }

    /// Signals every vCPU thread still running. One kick can be lost: on kernels where a
    /// vCPU waiting for INIT/SIPI blocks before KVM looks at `immediate_exit`, a signal
    /// taken just before `KVM_RUN` leaves it blocked. Callers that wait for the vCPUs
    /// therefore kick again until they see them respond.
    fn kick_all(&self) {
        for t in lock(&self.threads).iter().filter(|t| !t.is_finished()) {
            let _ = t.kill(vmm_sys_util::signal::SIGRTMIN() + vcpu::VCPU_KICK_SIGNAL_OFFSET);
        }
    }

    fn require(&self, wanted: RunState, op: &str) -> Result<()> {
        let state = lock(&self.life.0).state;
        if state != wanted {
            return Err(VmmError::InvalidState {
                state: format!("{state:?}").to_lowercase(),
                op: op.into(),
            });
        }
        Ok(())
    }

    /// Pauses all vCPUs; returns once every one is parked.
    pub fn pause(&self) -> Result<()> {
        self.require(RunState::Running, "pause")?;
        lock(&self.paused_states).clear();
        self.control.request(RunRequest::Pause);
        let n = lock(&self.threads).len();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut parked = false;
        while !parked && Instant::now() < deadline {
            self.kick_all();
            parked = self.control.wait_paused(n, Duration::from_millis(2));
        }
        if !parked {
            self.control.request(RunRequest::Run);
            return Err(VmmError::InvalidState {
                state: "running".into(),
                op: "pause (vCPUs did not stop within 5 s)".into(),
            });
        }
        lock(&self.life.0).state = RunState::Paused;
        let _ = self.events.send(VmmEvent::Paused);
        Ok(())
    }

    /// Resumes paused vCPUs.
    pub fn resume(&self) -> Result<()> {
        self.require(RunState::Paused, "resume")?;
        lock(&self.life.0).state = RunState::Running;
        self.control.request(RunRequest::Run);
        let _ = self.events.send(VmmEvent::Resumed);
        Ok(())
    }

    /// vCPU states captured at the last pause, sorted by vCPU.
    pub fn paused_vcpu_states(&self) -> Vec<VcpuState> {
        let mut states = lock(&self.paused_states);
        states.sort_by_key(|s| s.id);
        states.clone()
    }

    /// Device states.
    pub fn device_states(&self) -> DeviceStates {
        DeviceStates {
            serial: lock(&self.serial).state().clone(),
            i8042: lock(&self.i8042).clone(),
            boot_timer: lock(&self.boot_timer).clone(),
            guest_channel: lock(&self.channel).state().clone(),
            disks: self.disks.iter().map(|d| lock(d).state()).collect(),
        }
    }

    /// Asks the guest to power off over the channel; kills it after `timeout`. Returns how
    /// it ended.
    pub fn stop(&self, timeout: Duration) -> ExitReason {
        let asked = self.send_to_guest("ovm.cmd", b"poweroff").is_ok();
        if asked && let Some(reason) = self.wait_exit(timeout) {
            return reason;
        }
        self.kill();
        self.wait_exit(Duration::from_secs(1))
            .unwrap_or(ExitReason::Killed)
    }

    /// Stops the vCPUs now.
    pub fn kill(&self) {
        self.finish(ExitReason::Killed);
    }

    /// Waits up to `timeout` for the VM to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitReason> {
        let guard = lock(&self.life.0);
        let (guard, _) = self
            .life
            .1
            .wait_timeout_while(guard, timeout, |l| l.exit.is_none())
            .unwrap_or_else(|p| p.into_inner());
        guard.exit.clone()
    }

    /// Joins the vCPU threads after an exit, kicking them until they have left `KVM_RUN`
    /// (at most 5 s; a thread still stuck then is left behind rather than hanging the
    /// caller).
    pub fn join(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&self.threads).iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            self.kick_all();
            std::thread::sleep(Duration::from_millis(2));
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads.into_iter().filter(|t| t.is_finished()) {
            let _ = t.join();
        }
    }

    /// Current run state.
    pub fn state(&self) -> RunState {
        lock(&self.life.0).state
    }

    /// Why it exited, once it has.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        lock(&self.life.0).exit.clone()
    }

    /// Sends a message to the guest.
    pub fn send_to_guest(&self, key: &str, value: &[u8]) -> Result<()> {
        lock(&self.channel)
            .send_to_guest(key, value)
            .map_err(|reason| VmmError::invalid("guest message", reason))
    }

    /// The value the guest last published under `key`.
    pub fn guest_value(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.channel).published(key).map(<[u8]>::to_vec)
    }

    /// Console output so far.
    pub fn console(&self) -> Vec<u8> {
        self.console.contents()
    }

    /// Flushes pending console output to the log and listener.
    pub fn flush_console(&self) {
        self.console.flush();
    }

    /// Queues console input; returns bytes taken.
    pub fn console_input(&self, input: &[u8]) -> usize {
        lock(&self.serial).queue_input(input)
    }

    /// Resource use.
    pub fn stats(&self) -> VmmStats {
        let life = lock(&self.life.0);
        VmmStats {
            memory_mib: memory::size(self.vm.memory()) >> 20,
            rss_bytes: process_rss_bytes().unwrap_or(0),
            cpu_time_ns: process_cpu_time_ns(),
            uptime_ms: self.started_at.elapsed().as_millis() as u64,
            boot_us: life.ready.map(|d| d.as_micros() as u64),
            exits: self.counters.exits.load(Ordering::Relaxed),
            unhandled_io: self.counters.unhandled_io.load(Ordering::Relaxed),
            guest_misbehaviour: lock(&self.channel).state().misbehaviour_count,
            console_bytes: self.console.total(),
        }
    }
}

/// Prints how long each build phase took to stderr when `OVM_VMM_TRACE_BOOT` is set.
struct BootTrace {
    start: Option<Instant>,
}

impl BootTrace {
    fn from_env(start: Instant) -> Self {
        BootTrace {
            start: std::env::var_os("OVM_VMM_TRACE_BOOT").map(|_| start),
        }
    }

    fn mark(&self, phase: &str) {
        if let Some(start) = self.start {
            eprintln!(
                "ovm-vmm: {:>8.3} ms  {phase}",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

/// Resident set size of this process, from /proc/self/statm.
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// CPU time of this process (all threads), nanoseconds.
pub fn process_cpu_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_are_described_on_the_command_line_once() {
        assert_eq!(guest_cmdline("idle", 0), "idle");
        assert_eq!(
            guest_cmdline("blk", 2),
            "blk virtio_mmio.device=4K@0xd0000000:10 virtio_mmio.device=4K@0xd0001000:11"
        );
        assert_eq!(guest_cmdline("", 1), "virtio_mmio.device=4K@0xd0000000:10");
        let described = "console=ttyS0 virtio_mmio.device=4K@0xd0000000:10";
        assert_eq!(guest_cmdline(described, 1), described);
    }
}
