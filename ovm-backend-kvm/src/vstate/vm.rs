//! The KVM VM: in-kernel interrupt controllers and PIT, memory slots, interrupt lines.

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Kvm, VmFd};

use super::memory::{self, GuestMemoryMmap};
use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;
use crate::devices::Irq;
use crate::error::{Result, VmmError};

/// A VM with its memory.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    mem: GuestMemoryMmap,
}

impl Vm {
    /// Opens /dev/kvm and creates a VM with `mem`, the PIC, I/O APIC and PIT.
    ///
    /// The order is chosen for boot time. Memory slots are registered first, while the
    /// VM's `kvm->srcu` has no grace period pending: `KVM_SET_USER_MEMORY_REGION` ends in
    /// `synchronize_srcu_expedited`, which then completes in tens of microseconds. Since
    /// Linux 6.18 ("KVM: Avoid synchronize_srcu() in kvm_io_bus_register_dev()"), creating
    /// the irqchip and the PIT registers their I/O-bus devices with a *normal* `call_srcu`,
    /// whose grace period starts one jiffy later and hands its callbacks over one jiffy
    /// after that; an expedited wait issued meanwhile joins that slow grace period. With
    /// the slots registered after them, this host spent 4–8 ms (1–2 jiffies at `HZ=250`)
    /// in `KVM_SET_USER_MEMORY_REGION`; registered first, the whole sequence takes ~0.3 ms.
    /// KVM's own constraints are kept: the irqchip before the PIT and before any vCPU.
    pub fn new(mem: GuestMemoryMmap) -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| VmmError::KvmUnavailable(e.to_string()))?;
        let fd = kvm.create_vm().map_err(VmmError::kvm("KVM_CREATE_VM"))?;
        memory::register(&fd, &mem, false)?;
        // Needed on Intel VMX (real-mode emulation); a cheap no-op elsewhere. It may add a
        // private memory slot, so it too comes before the irqchip.
        fd.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(VmmError::kvm("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip()
            .map_err(VmmError::kvm("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(VmmError::kvm("KVM_CREATE_PIT2"))?;
        Ok(Vm { kvm, fd, mem })
    }

    /// The KVM system handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Creates an interrupt line wired to `gsi` through an irqfd.
    pub fn irq(&self, gsi: u32) -> Result<Irq> {
        let irq = Irq::new(gsi).map_err(VmmError::io("create irq eventfd"))?;
        self.fd
            .register_irqfd(irq.eventfd(), gsi)
            .map_err(VmmError::kvm("KVM_IRQFD"))?;
        Ok(irq)
    }
}
