//! Carrying out a call on the hypervisor, after checking what it names.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ovm_core::hypervisor::{VmConfig, guest_message};
use ovm_core::model::BootSource;
use ovm_core::storage::VolumeAccess;
use ovm_core::{Error, Hypervisor};

use crate::protocol::{Bytes, Call, Outcome, Reply, WireError};

/// Longest graceful stop a caller may ask for.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Checks what a call names (VM definitions, keys, sizes) before anything is done.
pub fn validate(call: &Call, allowed: &[PathBuf]) -> Result<(), WireError> {
    let invalid = |e: Error| WireError::from(&e);
    match call {
        Call::Define { config } => {
            config.spec.validate().map_err(invalid)?;
            for path in paths(config) {
                check_path(path, allowed).map_err(invalid)?;
            }
            Ok(())
        }
        Call::Stop { timeout_ms, .. } if Duration::from_millis(*timeout_ms) > MAX_STOP_TIMEOUT => {
            Err(invalid(Error::invalid(
                "stop.timeout_ms",
                format!("at most {} s", MAX_STOP_TIMEOUT.as_secs()),
            )))
        }
        Call::GuestSend { key, value, .. } => {
            guest_message::validate(key, &value.0).map_err(invalid)
        }
        Call::GuestRead { key, .. } => guest_message::validate(key, &[]).map_err(invalid),
        Call::ConsoleWrite { input, .. } if input.0.len() > 64 * 1024 => Err(invalid(
            Error::invalid("console_write.input", "at most 64 KiB at a time"),
        )),
        _ => Ok(()),
    }
}

/// Every file a definition names on this server.
fn paths(config: &VmConfig) -> Vec<&Path> {
    let mut out: Vec<&Path> = Vec::new();
    if let BootSource::Kernel { kernel, initrd, .. } = &config.spec.boot {
        out.push(kernel);
        out.extend(initrd.as_deref());
    }
    for d in &config.disks {
        if let VolumeAccess::Path { path, .. } = &d.access {
            out.push(path);
        }
    }
    out
}

/// A path must be absolute, plain (no `..`) and inside one of the allowed directories.
fn check_path(path: &Path, allowed: &[PathBuf]) -> ovm_core::Result<()> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(Error::invalid(
            "vm.path",
            format!("{shown} is not absolute"),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(Error::invalid(
            "vm.path",
            format!("{shown} is not a plain path (.. or .)"),
        ));
    }
    if !allowed.iter().any(|dir| path.starts_with(dir)) {
        let dirs: Vec<String> = allowed.iter().map(|d| d.display().to_string()).collect();
        return Err(Error::invalid(
            "vm.path",
            format!(
                "{shown} is outside what this agent serves ({}; see ovm-agent --allow-path)",
                dirs.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Does the call.
pub async fn run(hv: &dyn Hypervisor, call: Call) -> Outcome {
    match dispatch(hv, call).await {
        Ok(reply) => Outcome::Ok(reply),
        Err(e) => Outcome::Error(WireError::from(&e)),
    }
}

async fn dispatch(hv: &dyn Hypervisor, call: Call) -> ovm_core::Result<Reply> {
    let done = |r: ovm_core::Result<()>| r.map(|()| Reply::Done);
    match call {
        Call::HostInfo => hv.host_info().await.map(Reply::HostInfo),
        Call::Capabilities => Ok(Reply::Capabilities(hv.capabilities())),
        Call::Define { config } => done(hv.define(&config).await),
        Call::Undefine { vm } => done(hv.undefine(vm).await),
        Call::Start { vm } => done(hv.start(vm).await),
        Call::Stop { vm, timeout_ms } => done(hv.stop(vm, Duration::from_millis(timeout_ms)).await),
        Call::Kill { vm } => done(hv.kill(vm).await),
        Call::Pause { vm } => done(hv.pause(vm).await),
        Call::Resume { vm } => done(hv.resume(vm).await),
        Call::State { vm } => hv.state(vm).await.map(Reply::State),
        Call::List => hv.list().await.map(Reply::List),
        Call::Stats { vm } => hv.stats(vm).await.map(Reply::Stats),
        Call::ConsoleBuffer { vm } => hv.console_buffer(vm).await.map(|b| Reply::Bytes(Bytes(b))),
        Call::ConsoleWrite { vm, input } => done(hv.console_write(vm, &input.0).await),
        Call::GuestSend { vm, key, value } => done(hv.guest_send(vm, &key, &value.0).await),
        Call::GuestRead { vm, key } => hv
            .guest_read(vm, &key)
            .await
            .map(|v| Reply::GuestValue(v.map(Bytes))),
        Call::SetVcpus { vm, vcpus } => done(hv.set_vcpus(vm, vcpus).await),
        Call::SetMemory { vm, memory_mib } => done(hv.set_memory(vm, memory_mib).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovm_core::VmId;
    use ovm_core::hypervisor::DiskAttachment;
    use ovm_core::model::{VmSpec, VolumeFormat};

    fn define(kernel: &str, disk: &str) -> Call {
        let mut spec = VmSpec::new("web", 1, 256);
        spec.boot = BootSource::Kernel {
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
        };
        let mut config = VmConfig::new(VmId::new(), spec);
        config.disks.push(DiskAttachment {
            access: VolumeAccess::Path {
                path: disk.into(),
                format: VolumeFormat::Raw,
            },
            read_only: false,
            device: None,
        });
        Call::Define {
            config: Box::new(config),
        }
    }

    #[test]
    fn definitions_may_name_only_files_the_agent_serves() {
        let allowed = vec![
            PathBuf::from("/srv/ovm"),
            PathBuf::from("/var/lib/ovm-agent"),
        ];
        validate(
            &define("/srv/ovm/vmlinuz", "/var/lib/ovm-agent/d.img"),
            &allowed,
        )
        .unwrap();
        for (kernel, disk) in [
            ("/etc/shadow", "/srv/ovm/d.img"),
            ("/srv/ovm/../../etc/shadow", "/srv/ovm/d.img"),
            ("vmlinuz", "/srv/ovm/d.img"),
            ("/srv/ovm/vmlinuz", "/srv/ovmx/d.img"),
        ] {
            let err = validate(&define(kernel, disk), &allowed).unwrap_err();
            assert!(
                matches!(err, WireError::InvalidSpec { .. }),
                "{kernel} {disk}: {err:?}"
            );
        }
    }

    #[test]
    fn oversized_and_malformed_arguments_are_refused() {
        let vm = VmId::new();
        for call in [
            Call::Stop {
                vm,
                timeout_ms: u64::MAX,
            },
            Call::GuestSend {
                vm,
                key: "k".repeat(1000),
                value: Bytes(vec![]),
            },
            Call::ConsoleWrite {
                vm,
                input: Bytes(vec![0; 100_000]),
            },
        ] {
            assert!(validate(&call, &[]).is_err(), "{call:?}");
        }
    }
}
