//! Builds the bundled test guest (guest/*.S, guest/*.c) with the system gcc and ld into
//! `$OUT_DIR/ovm-test-guest.elf`, and tells the crate where it is (`OVM_TEST_GUEST`).

use std::path::{Path, PathBuf};
use std::process::Command;

const CFLAGS: &[&str] = &[
    "-m64",
    "-O2",
    "-std=gnu11",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-nostdlib",
    "-Wall",
    "-Wextra",
    "-Werror",
];

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (the test guest needs gcc and ld)"));
    assert!(status.success(), "{cmd:?} failed with {status}");
}

fn compile(source: &Path, object: &Path) {
    run(Command::new("gcc")
        .args(CFLAGS)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object));
}

fn main() {
    let guest = PathBuf::from("guest");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for file in [
        "entry.S", "main.c", "blk.c", "guest.h", "ports.h", "guest.ld",
    ] {
        println!("cargo:rerun-if-changed=guest/{file}");
    }
    let objects: Vec<PathBuf> = ["entry.S", "main.c", "blk.c"]
        .iter()
        .map(|source| {
            let object = out.join(Path::new(source).with_extension("o"));
            compile(&guest.join(source), &object);
            object
        })
        .collect();
    let elf = out.join("ovm-test-guest.elf");
    run(Command::new("ld")
        .args(["-nostdlib", "-static", "-no-pie", "-z", "noexecstack"])
        .arg("--no-warn-rwx-segments")
        .arg("-T")
        .arg(guest.join("guest.ld"))
        .arg("-o")
        .arg(&elf)
        .args(&objects));
    println!("cargo:rustc-env=OVM_TEST_GUEST={}", elf.display());
}
