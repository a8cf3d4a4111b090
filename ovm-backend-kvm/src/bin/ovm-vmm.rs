//! `ovm-vmm`: one VM per process (see `ovm_backend_kvm::vmm_process`).

fn main() {
    ovm_backend_kvm::vmm_process::run(std::env::args().skip(1))
}
