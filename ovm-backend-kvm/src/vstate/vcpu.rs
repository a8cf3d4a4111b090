//! A vCPU: its boot configuration, its run loop on its own thread, and its state.
//!
//! The VMM interrupts a running vCPU with a real-time signal whose handler sets the
//! vCPU's `immediate_exit`, so `KVM_RUN` returns with `EINTR` even if the signal arrived
//! just before the thread entered it; the thread then honours pause or stop.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_regs, kvm_run,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use serde::{Deserialize, Serialize};

use super::vm::Vm;
use crate::arch::x86_64::{cpuid, msr, regs};
use crate::devices::{Bus, DeviceAction, lock};
use crate::error::{Result, VmmError};

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Offset from `SIGRTMIN` of the signal that kicks vCPUs out of `KVM_RUN`.
pub const VCPU_KICK_SIGNAL_OFFSET: i32 = 0;

thread_local! {
    /// This thread's vCPU run structure, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|run| {
        let run = run.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's mapped kvm_run, set while the thread owns
            // its vCPU and cleared before the vCPU is dropped; a byte store is signal-safe.
            unsafe { std::ptr::write_volatile(&mut (*run).immediate_exit, 1) };
        }
    });
}

/// Installs the kick signal handler (once per process).
pub fn install_kick_handler() -> Result<()> {
    vmm_sys_util::signal::register_signal_handler(
        vmm_sys_util::signal::SIGRTMIN() + VCPU_KICK_SIGNAL_OFFSET,
        kick_handler,
    )
    .map_err(|e| VmmError::Io {
        what: "install vCPU kick signal handler".into(),
        source: std::io::Error::from_raw_os_error(e.errno()),
    })
}

/// Why a vCPU stopped running the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum VcpuStop {
    /// The guest powered off.
    PowerOff,
    /// The guest asked for a reset.
    Reset,
    /// Triple fault or a guest crash report.
    Crash {
        /// What happened.
        reason: String,
    },
    /// KVM could not run the guest.
    InternalError {
        /// Exit reason and registers.
        detail: String,
    },
    /// The VMM stopped it.
    Stopped,
}

/// What the VMM wants the vCPUs to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRequest {
    /// Run the guest.
    Run,
    /// Stay paused.
    Pause,
    /// Leave the run loop.
    Stop,
}

/// Shared by the VMM and its vCPU threads: the requested run state and who has paused.
pub struct RunControl {
    state: Mutex<(RunRequest, usize)>,
    changed: Condvar,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl {
            state: Mutex::new((RunRequest::Run, 0)),
            changed: Condvar::new(),
        }
    }
}

impl RunControl {
    /// Sets the request and wakes paused vCPUs.
    pub fn request(&self, r: RunRequest) {
        lock(&self.state).0 = r;
        self.changed.notify_all();
    }

    /// The current request.
    pub fn current(&self) -> RunRequest {
        lock(&self.state).0
    }

    /// Waits until `n` vCPUs are parked in pause (or the request changed).
    pub fn wait_paused(&self, n: usize, timeout: std::time::Duration) -> bool {
        let guard = lock(&self.state);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |(r, paused)| {
                *r == RunRequest::Pause && *paused < n
            })
            .unwrap_or_else(|p| p.into_inner());
        guard.1 >= n
    }

    /// Called by a vCPU thread between runs: parks while paused; false means stop.
    fn proceed(&self, on_park: &mut dyn FnMut()) -> bool {
        let mut guard = lock(&self.state);
        if guard.0 == RunRequest::Pause {
            guard.1 += 1;
            self.changed.notify_all();
            on_park();
            while guard.0 == RunRequest::Pause {
                guard = self.changed.wait(guard).unwrap_or_else(|p| p.into_inner());
            }
            guard.1 -= 1;
        }
        guard.0 == RunRequest::Run
    }
}

/// Everything guest-visible about a vCPU, for snapshots and migration.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VcpuState {
    /// vCPU index (= APIC id).
    pub id: u8,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// FPU/SSE/AVX state.
    pub xsave: kvm_xsave,
    /// Extended control registers.
    pub xcrs: kvm_xcrs,
    /// Local APIC.
    pub lapic: kvm_lapic_state,
    /// The boot MSRs' current values.
    pub msrs: Vec<(u32, u64)>,
    /// Run state (running, halted, waiting for SIPI).
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts, NMIs.
    pub events: kvm_vcpu_events,
    /// Debug registers.
    pub debug_regs: kvm_debugregs,
}

// By hand: `kvm_xsave` is not `Clone` (its flexible array member is empty here).
impl Clone for VcpuState {
    fn clone(&self) -> Self {
        VcpuState {
            id: self.id,
            regs: self.regs,
            sregs: self.sregs,
            xsave: kvm_xsave {
                region: self.xsave.region,
                ..kvm_xsave::default()
            },
            xcrs: self.xcrs,
            lapic: self.lapic,
            msrs: self.msrs.clone(),
            mp_state: self.mp_state,
            events: self.events,
            debug_regs: self.debug_regs,
        }
    }
}

/// Counters shared with the VMM.
#[derive(Debug, Default)]
pub struct VcpuCounters {
    /// Exits to the VMM.
    pub exits: AtomicU64,
    /// Accesses to ports or addresses with no device.
    pub unhandled_io: AtomicU64,
}

/// What a vCPU thread needs besides its vCPU.
pub struct VcpuContext {
    /// I/O ports.
    pub pio: Arc<Bus>,
    /// MMIO.
    pub mmio: Arc<Bus>,
    /// Pause / stop requests.
    pub control: Arc<RunControl>,
    /// Counters.
    pub counters: Arc<VcpuCounters>,
    /// Called when the guest reports ready.
    pub on_ready: Box<dyn Fn() + Send>,
    /// Called on the vCPU thread each time it parks in pause, with its state.
    pub on_pause: Box<dyn Fn(Result<VcpuState>) + Send>,
}

/// A vCPU.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
}

fn set_lvt(lapic: &mut kvm_lapic_state, offset: usize, mode: u32) {
    let bytes: Vec<u8> = lapic.regs[offset..offset + 4]
        .iter()
        .map(|&b| b as u8)
        .collect();
    let value = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let value = (value & !0x700) | (mode << 8);
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        lapic.regs[offset + i] = *b as _;
    }
}

impl Vcpu {
    /// Creates vCPU `id`.
    pub fn new(vm: &Vm, id: u8) -> Result<Self> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(VmmError::kvm("KVM_CREATE_VCPU"))?;
        Ok(Vcpu { id, fd })
    }

    /// The vCPU index.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Sets CPUID, MSRs and the LAPIC's LINT pins; for the boot vCPU, also the entry state.
    pub fn configure(
        &self,
        vm: &Vm,
        supported: &CpuId,
        count: u8,
        entry: Option<regs::EntryMode>,
    ) -> Result<()> {
        let mut cpuid = supported.clone();
        cpuid::filter_for_vcpu(&mut cpuid, self.id, count);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(VmmError::kvm("KVM_SET_CPUID2"))?;
        let msrs = msr::to_kvm_msrs(&msr::boot_msr_entries())?;
        self.fd
            .set_msrs(&msrs)
            .map_err(VmmError::kvm("KVM_SET_MSRS"))?;
        let mut lapic = self
            .fd
            .get_lapic()
            .map_err(VmmError::kvm("KVM_GET_LAPIC"))?;
        set_lvt(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
        self.fd
            .set_lapic(&lapic)
            .map_err(VmmError::kvm("KVM_SET_LAPIC"))?;
        if let Some(mode) = entry {
            let mut sregs = self
                .fd
                .get_sregs()
                .map_err(VmmError::kvm("KVM_GET_SREGS"))?;
            regs::setup_sregs(vm.memory(), mode, &mut sregs)?;
            self.fd
                .set_sregs(&sregs)
                .map_err(VmmError::kvm("KVM_SET_SREGS"))?;
            self.fd
                .set_regs(&regs::boot_regs(mode))
                .map_err(VmmError::kvm("KVM_SET_REGS"))?;
            self.fd
                .set_fpu(&regs::boot_fpu())
                .map_err(VmmError::kvm("KVM_SET_FPU"))?;
        }
        Ok(())
    }

    /// Reads the vCPU's full state (call while it is not running).
    pub fn save_state(&self) -> Result<VcpuState> {
        let mut msrs = msr::to_kvm_msrs(&msr::boot_msr_entries())?;
        self.fd
            .get_msrs(&mut msrs)
            .map_err(VmmError::kvm("KVM_GET_MSRS"))?;
        Ok(VcpuState {
            id: self.id,
            regs: self.fd.get_regs().map_err(VmmError::kvm("KVM_GET_REGS"))?,
            sregs: self
                .fd
                .get_sregs()
                .map_err(VmmError::kvm("KVM_GET_SREGS"))?,
            xsave: self
                .fd
                .get_xsave()
                .map_err(VmmError::kvm("KVM_GET_XSAVE"))?,
            xcrs: self.fd.get_xcrs().map_err(VmmError::kvm("KVM_GET_XCRS"))?,
            lapic: self
                .fd
                .get_lapic()
                .map_err(VmmError::kvm("KVM_GET_LAPIC"))?,
            msrs: msrs.as_slice().iter().map(|e| (e.index, e.data)).collect(),
            mp_state: self
                .fd
                .get_mp_state()
                .map_err(VmmError::kvm("KVM_GET_MP_STATE"))?,
            events: self
                .fd
                .get_vcpu_events()
                .map_err(VmmError::kvm("KVM_GET_VCPU_EVENTS"))?,
            debug_regs: self
                .fd
                .get_debug_regs()
                .map_err(VmmError::kvm("KVM_GET_DEBUGREGS"))?,
        })
    }

    fn describe_registers(&self) -> String {
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs.sel={:#x}",
                r.rip,
                r.rsp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                s.cr0,
                s.cr3,
                s.cr4,
                s.efer,
                s.cs.selector
            ),
            (Err(e), _) | (_, Err(e)) => format!("registers unreadable: {e}"),
        }
    }

    /// Runs the guest until it stops, honouring pause and stop from `ctx.control`.
    pub fn run(mut self, ctx: VcpuContext) -> VcpuStop {
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|r| r.set(run_ptr));
        let stop = self.run_loop(&ctx);
        KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
        stop
    }

    fn run_loop(&mut self, ctx: &VcpuContext) -> VcpuStop {
        loop {
            let mut park = || (ctx.on_pause)(self.save_state());
            if !ctx.control.proceed(&mut park) {
                return VcpuStop::Stopped;
            }
            let outcome = match self.fd.run() {
                Ok(exit) => {
                    ctx.counters.exits.fetch_add(1, Ordering::Relaxed);
                    handle_exit(exit, ctx)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    Outcome::Continue
                }
                Err(e) => Outcome::InternalError(format!("KVM_RUN failed: {e}")),
            };
            match outcome {
                Outcome::Continue => {}
                Outcome::Stop(stop) => return stop,
                Outcome::InternalError(what) => {
                    return VcpuStop::InternalError {
                        detail: format!("vcpu {}: {what}; {}", self.id, self.describe_registers()),
                    };
                }
                Outcome::TripleFault => {
                    return VcpuStop::Crash {
                        reason: format!(
                            "vcpu {}: triple fault (KVM shutdown exit); {}",
                            self.id,
                            self.describe_registers()
                        ),
                    };
                }
            }
        }
    }
}

enum Outcome {
    Continue,
    Stop(VcpuStop),
    TripleFault,
    InternalError(String),
}

fn device_outcome(action: Option<DeviceAction>, ctx: &VcpuContext) -> Outcome {
    match action {
        Some(DeviceAction::None) => Outcome::Continue,
        Some(DeviceAction::Ready) => {
            (ctx.on_ready)();
            Outcome::Continue
        }
        Some(DeviceAction::PowerOff) => Outcome::Stop(VcpuStop::PowerOff),
        Some(DeviceAction::Reset) => Outcome::Stop(VcpuStop::Reset),
        None => {
            ctx.counters.unhandled_io.fetch_add(1, Ordering::Relaxed);
            Outcome::Continue
        }
    }
}

fn handle_exit(exit: VcpuExit<'_>, ctx: &VcpuContext) -> Outcome {
    match exit {
        VcpuExit::IoOut(port, data) => device_outcome(ctx.pio.write(u64::from(port), data), ctx),
        VcpuExit::IoIn(port, data) => {
            if !ctx.pio.read(u64::from(port), data) {
                ctx.counters.unhandled_io.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Continue
        }
        VcpuExit::MmioWrite(addr, data) => device_outcome(ctx.mmio.write(addr, data), ctx),
        VcpuExit::MmioRead(addr, data) => {
            if !ctx.mmio.read(addr, data) {
                ctx.counters.unhandled_io.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Continue
        }
        VcpuExit::Shutdown => Outcome::TripleFault,
        VcpuExit::Hlt => {
            // Only without an in-kernel LAPIC; ours has one. Yield and go on.
            std::thread::yield_now();
            Outcome::Continue
        }
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => Outcome::Stop(VcpuStop::PowerOff),
            KVM_SYSTEM_EVENT_RESET => Outcome::Stop(VcpuStop::Reset),
            KVM_SYSTEM_EVENT_CRASH => Outcome::Stop(VcpuStop::Crash {
                reason: "guest reported a crash (system event)".into(),
            }),
            other => Outcome::InternalError(format!("unknown system event {other}")),
        },
        VcpuExit::InternalError => Outcome::InternalError("KVM internal error exit".into()),
        VcpuExit::FailEntry(reason, cpu) => Outcome::InternalError(format!(
            "VM entry failed: hardware reason {reason:#x} on host cpu {cpu}"
        )),
        VcpuExit::Intr => Outcome::Continue,
        other => Outcome::InternalError(format!("unexpected exit {other:?}")),
    }
}

/// KVM's supported CPUID, read once per VM.
pub fn supported_cpuid(vm: &Vm) -> Result<CpuId> {
    vm.kvm()
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmmError::kvm("KVM_GET_SUPPORTED_CPUID"))
}
