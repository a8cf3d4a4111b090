#!/usr/bin/env bash
# A real Xen test bed on a machine without Xen: Xen 4.17 with a PV dom0, booted by GRUB
# from a rescue ISO inside QEMU (TCG emulation). Everything is built from this machine's
# own Debian packages (scripts/deps/ovm-backend-xen.sh installs them) and cached under
# target/xen-testbed/; rebuilding is skipped while the inputs are unchanged.
#
#   scripts/xen-testbed.sh check
#       Exits 0 when every tool and package the test bed needs is installed; otherwise
#       names what is missing and exits 2.
#   scripts/xen-testbed.sh build
#       Builds the cached pieces: the dom0 initramfs (busybox, the Xen kernel modules,
#       the Xen tools and their libraries), the PV guest kernel (Debian cloud kernel,
#       CONFIG_XEN_PV) and the guest's busybox initramfs.
#   scripts/xen-testbed.sh run [--payload EXE] [--timeout SECS] [--log FILE] [--env K=V]...
#       Builds what is missing, adds EXE (and the shared libraries it needs) to the dom0
#       initramfs, makes the ISO and boots it. dom0's init starts xenstored, xen-init-dom0
#       and xenconsoled, prints `xl info` and `xl list`, runs EXE between the markers
#       OVM-PAYLOAD-BEGIN / OVM-PAYLOAD-END rc=N, and powers off. The serial console goes to
#       stdout (and FILE). QEMU is killed after SECS (default 600); the exit status is
#       QEMU's, or 124 on timeout. OVM_XEN_TESTBED_XEN_ARGS adds to Xen's command line.
#   scripts/xen-testbed.sh run --agent EXE --agent-port PORT [--env OVM_AGENT_PASSWORD=…] …
#       Also gives dom0 a NIC (QEMU user networking, dom0 at 10.0.2.15) with host port
#       127.0.0.1:PORT forwarded to dom0's 8899, and after the payload runs the ovm agent
#       EXE there (`init`, then `run --hypervisor xen`) until QEMU is killed. The agent's
#       `listening` line (with its fingerprint) comes out on the serial console.
#
# Inside dom0 the payload finds the guest kernel at /ovm/guest/vmlinuz and its initramfs
# at /ovm/guest/initrd.img (env OVM_XEN_GUEST_KERNEL / OVM_XEN_GUEST_INITRD); the guest's
# init prints "OVM-GUEST: hello" and then a tick every 2 s, or powers off at once when its
# command line has `ovm.guest=poweroff`. xenconsoled logs guest consoles to
# /var/log/xen/guest-<name>.log.
set -euo pipefail

XEN_VERSION=4.17
XEN_BIN=/usr/lib/xen-$XEN_VERSION/bin
XEN_GZ=/boot/xen-$XEN_VERSION-amd64.gz
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${OVM_XEN_TESTBED_DIR:-$ROOT/target/xen-testbed}
SELF_HASH=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)

log() { echo "xen-testbed: $*" >&2; }
die() { log "error: $*"; exit 2; }

need_tools() {
    local missing=()
    for t in qemu-system-x86_64 grub-mkrescue xorriso mformat cpio gzip ldd modprobe; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    [ -e "$XEN_GZ" ] || missing+=("$XEN_GZ")
    [ -x "$XEN_BIN/xl" ] || missing+=("$XEN_BIN/xl")
    [ -x /bin/busybox ] || missing+=(/bin/busybox)
    if [ ${#missing[@]} -gt 0 ]; then
        die "missing ${missing[*]} (run scripts/deps/ovm-backend-xen.sh after apt-get update)"
    fi
}

# The newest installed kernel whose flavour is $1 (amd64 for dom0, cloud-amd64 for guests).
kernel_version() {
    local flavour=$1 v best=""
    for f in /boot/vmlinuz-*-"$flavour"; do
        [ -e "$f" ] || continue
        v=${f#/boot/vmlinuz-}
        # "amd64" must not pick the cloud flavour.
        if [ "$flavour" = amd64 ] && [[ $v == *-cloud-amd64 ]]; then continue; fi
        best=$(printf '%s\n%s\n' "$best" "$v" | sed '/^$/d' | sort -V | tail -n1)
    done
    [ -n "$best" ] || die "no /boot/vmlinuz-*-$flavour (install linux-image-$flavour)"
    echo "$best"
}

# Copies a file into the tree $1 at the same path, following symlinks for the content but
# keeping the symlink itself (so sonames resolve as on the host).
copy_in() {
    local tree=$1 f=$2
    mkdir -p "$tree$(dirname "$f")"
    if [ -L "$f" ]; then
        cp -a "$f" "$tree$f"
        local target
        target=$(readlink -f "$f")
        copy_in "$tree" "$target"
    elif [ ! -e "$tree$f" ]; then
        cp -a "$f" "$tree$f"
    fi
}

# Copies executables and every shared library ldd lists for them into the tree $1.
copy_with_libs() {
    local tree=$1
    shift
    local exe lib
    for exe in "$@"; do
        copy_in "$tree" "$exe"
        # `ldd` prints "name => /path (addr)" or "/path (addr)"; vdso has no path.
        while read -r lib; do
            [ -n "$lib" ] && copy_in "$tree" "$lib"
        done < <(ldd "$exe" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p')
    done
}

# Mirrors the host's merged-/usr links (lib -> usr/lib, ...) so that libraries copied by
# their /lib path and by their /usr/lib path land once.
mirror_usr_merge() {
    local tree=$1 d
    for d in bin sbin lib lib32 lib64 libx32; do
        if [ -L "/$d" ]; then
            mkdir -p "$tree/$(readlink "/$d" | sed 's,^/,,')"
            ln -sfn "$(readlink "/$d")" "$tree/$d"
        fi
    done
}

install_busybox() {
    local tree=$1
    mirror_usr_merge "$tree"
    mkdir -p "$tree/bin" "$tree/sbin" "$tree/usr/bin" "$tree/usr/sbin"
    cp /bin/busybox "$tree/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
        [ -e "$tree/bin/$applet" ] || ln -s busybox "$tree/bin/$applet"
    done
}

pack_cpio() {
    local tree=$1 out=$2
    (cd "$tree" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) | gzip -1 >"$out.tmp"
    mv "$out.tmp" "$out"
}

# --- the PV guest: cloud kernel + busybox initramfs ------------------------------------
build_guest() {
    local kver stamp dir tree
    kver=$(kernel_version cloud-amd64)
    dir=$CACHE/guest
    stamp="$SELF_HASH $kver"
    if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$stamp" ]; then return 0; fi
    log "building the PV guest ($kver)"
    grep -q '^CONFIG_XEN_PV=y' "/boot/config-$kver" || die "$kver lacks CONFIG_XEN_PV"
    rm -rf "$dir" && mkdir -p "$dir"
    tree=$dir/tree
    install_busybox "$tree"
    mkdir -p "$tree/proc" "$tree/sys" "$tree/dev" "$tree/tmp"
    cat >"$tree/init" <<'EOF'
#!/bin/sh
# ovm's Xen test guest: says hello on the console, then ticks until shut down.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "OVM-GUEST: hello from a Xen PV guest"
case " $(cat /proc/cmdline) " in
*" ovm.guest=poweroff "*)
    echo "OVM-GUEST: powering off"
    exec /bin/busybox poweroff -f
    ;;
esac
i=0
while true; do
    i=$((i + 1))
    echo "OVM-GUEST: tick $i"
    sleep 2
done
EOF
    # The kernel runs /sbin/poweroff when the toolstack asks the guest to shut down
    # (`xl shutdown`); busybox's own poweroff would signal init, which here is a script.
    rm -f "$tree/sbin/poweroff" "$tree/sbin/reboot"
    printf '#!/bin/sh\nexec /bin/busybox poweroff -f\n' >"$tree/sbin/poweroff"
    printf '#!/bin/sh\nexec /bin/busybox reboot -f\n' >"$tree/sbin/reboot"
    chmod +x "$tree/init" "$tree/sbin/poweroff" "$tree/sbin/reboot"
    pack_cpio "$tree" "$dir/initrd.img"
    cp "/boot/vmlinuz-$kver" "$dir/vmlinuz"
    rm -rf "$tree"
    echo "$stamp" >"$dir/stamp"
}

# --- dom0: the base initramfs ---------------------------------------------------------
DOM0_MODULES="xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc e1000"

build_dom0() {
    local kver stamp dir tree mod line ko name
    kver=$(kernel_version amd64)
    dir=$CACHE/dom0
    stamp="$SELF_HASH $kver $(dpkg-query -W -f='${Version}' xen-utils-$XEN_VERSION 2>/dev/null || echo unknown)"
    if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$stamp" ]; then return 0; fi
    log "building the dom0 initramfs ($kver)"
    grep -q '^CONFIG_XEN_DOM0=y' "/boot/config-$kver" || die "$kver lacks CONFIG_XEN_DOM0"
    rm -rf "$dir" && mkdir -p "$dir"
    tree=$dir/tree
    install_busybox "$tree"
    mkdir -p "$tree"/{proc,sys,dev,run,tmp,etc/xen,var/lib/xen,var/lib/xenstored,var/log/xen,var/lock,lib/ovm-modules,ovm/guest}
    ln -s ../run "$tree/var/run"

    # Kernel modules in dependency order, decompressed (busybox insmod reads plain .ko).
    : >"$tree/lib/ovm-modules/order"
    for mod in $DOM0_MODULES; do
        while read -r line; do
            case $line in insmod\ *) ;; *) continue ;; esac
            ko=$(echo "$line" | awk '{print $2}')
            name=$(basename "$ko")
            name=${name%.xz}
            name=${name%.zst}
            name=${name%.gz}
            [ -e "$tree/lib/ovm-modules/$name" ] && continue
            case $ko in
            *.xz) xz -dc "$ko" >"$tree/lib/ovm-modules/$name" ;;
            *.zst) zstd -qdc "$ko" >"$tree/lib/ovm-modules/$name" ;;
            *.gz) gzip -dc "$ko" >"$tree/lib/ovm-modules/$name" ;;
            *) cp "$ko" "$tree/lib/ovm-modules/$name" ;;
            esac
            echo "$name" >>"$tree/lib/ovm-modules/order"
        done < <(modprobe -S "$kver" --show-depends "$mod")
    done

    # The Xen tools and every library they load (libxl's helpers included).
    local tools=()
    for t in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper xenstore-control; do
        [ -x "$XEN_BIN/$t" ] && tools+=("$XEN_BIN/$t")
    done
    for t in /usr/bin/xenstore-read /usr/bin/xenstore-write /usr/bin/xenstore-ls /usr/bin/xenstore-list; do
        [ -x "$t" ] && tools+=("$t")
    done
    copy_with_libs "$tree" "${tools[@]}"
    # libgcc_s is dlopen'ed by glibc for thread cancellation; ldd does not list it.
    for lib in /lib/x86_64-linux-gnu/libgcc_s.so.1 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1; do
        [ -e "$lib" ] && copy_in "$tree" "$lib"
    done
    : >"$tree/etc/xen/xl.conf"
    echo "root:x:0:0:root:/:/bin/sh" >"$tree/etc/passwd"
    echo "root:x:0:" >"$tree/etc/group"

    cat >"$tree/init" <<EOF
#!/bin/sh
# dom0 of ovm's Xen test bed: bring up the Xen control plane, run the payload, power off.
export PATH=$XEN_BIN:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/
hostname ovm-xen-testbed
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mkdir -p /run/xen /run/xenstored /var/log/xen
while read -r m; do insmod /lib/ovm-modules/\$m || echo "OVM-DOM0: insmod \$m failed"; done </lib/ovm-modules/order
mount -t xenfs xenfs /proc/xen
xenstored --pid-file /run/xenstored.pid
xen-init-dom0
xenconsoled --log=guest --log-dir=/var/log/xen --pid-file=/run/xenconsoled.pid
echo "OVM-DOM0: up after \$(cut -d' ' -f1 /proc/uptime) s"
xl info
xl list -v
[ -f /ovm/env ] && . /ovm/env
if [ -x /ovm/payload ]; then
    echo "OVM-PAYLOAD-BEGIN"
    /ovm/payload
    echo "OVM-PAYLOAD-END rc=\$?"
fi
if [ -x /ovm/agent ]; then
    # QEMU's user network: dom0 is 10.0.2.15, the host forwards a port to its 8899.
    ip link set lo up
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
    mkdir -p /var/lib/ovm-agent
    /ovm/agent init --state-dir /var/lib/ovm-agent </dev/null >/dev/null
    echo "OVM-AGENT-BEGIN"
    /ovm/agent run --hypervisor xen --listen 0.0.0.0:8899 --state-dir /var/lib/ovm-agent \\
        --allow-path /ovm/guest --xen-console-dir /var/log/xen
    echo "OVM-AGENT-END rc=\$?"
fi
echo "OVM-DOM0: powering off after \$(cut -d' ' -f1 /proc/uptime) s"
sync
poweroff -f
EOF
    chmod +x "$tree/init"
    pack_cpio "$tree" "$dir/initrd.img"
    cp "/boot/vmlinuz-$kver" "$dir/vmlinuz"
    rm -rf "$tree"
    echo "$stamp" >"$dir/stamp"
}

# The guest goes into dom0's initramfs as a second cpio archive (the kernel unpacks
# concatenated archives in order), so the payload can change without rebuilding the rest.
build_guest_overlay() {
    local dir=$CACHE/guest tree
    if [ -f "$dir/overlay.cpio.gz" ] && [ "$dir/overlay.cpio.gz" -nt "$dir/stamp" ]; then return 0; fi
    tree=$(mktemp -d)
    mkdir -p "$tree/ovm/guest"
    cp "$dir/vmlinuz" "$dir/initrd.img" "$tree/ovm/guest/"
    pack_cpio "$tree" "$dir/overlay.cpio.gz"
    rm -rf "$tree"
}

cmd_build() {
    need_tools
    mkdir -p "$CACHE"
    build_guest
    build_dom0
    build_guest_overlay
}

cmd_run() {
    local payload="" timeout=600 logfile="" envs=() agent="" agent_port=""
    while [ $# -gt 0 ]; do
        case $1 in
        --payload) payload=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --log) logfile=$2; shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        --agent) agent=$2; shift 2 ;;
        --agent-port) agent_port=$2; shift 2 ;;
        *) die "unknown option $1" ;;
        esac
    done
    mkdir -p "$CACHE"
    # One build at a time (two test beds may start together); each run its own directory.
    (flock 9 && cmd_build) 9>"$CACHE/build.lock"
    local run tree initrd stale
    # Run directories of runs that were killed (no trap ran) are removed here.
    for stale in "$CACHE"/run-*; do
        [ -d "$stale" ] || continue
        kill -0 "${stale##*-}" 2>/dev/null || rm -rf "$stale"
    done
    run=$CACHE/run-$$
    # A global for the trap: `run` is gone by the time the script exits.
    RUN_DIR=$run
    trap 'rm -rf "${RUN_DIR:-}"' EXIT
    rm -rf "$run" && mkdir -p "$run/iso/boot/grub"
    tree=$run/payload-tree
    mirror_usr_merge "$tree"
    mkdir -p "$tree/ovm"
    {
        echo "export OVM_XEN_GUEST_KERNEL=/ovm/guest/vmlinuz"
        echo "export OVM_XEN_GUEST_INITRD=/ovm/guest/initrd.img"
        echo "export OVM_XEN_CONSOLE_LOG_DIR=/var/log/xen"
        echo "export OVM_XEN_DOM0=1"
        local kv
        for kv in "${envs[@]}"; do
            printf 'export %q\n' "$kv"
        done
    } >"$tree/ovm/env"
    if [ -n "$payload" ]; then
        [ -x "$payload" ] || die "payload $payload is not an executable"
        copy_with_libs "$tree" "$(readlink -f "$payload")"
        # Debug info is of no use on the serial console; it only slows the boot.
        cp "$(readlink -f "$payload")" "$tree/ovm/payload"
        strip --strip-debug "$tree/ovm/payload" 2>/dev/null || true
        rm -f "$tree$(readlink -f "$payload")"
    fi
    local net=()
    if [ -n "$agent" ]; then
        [ -x "$agent" ] || die "agent $agent is not an executable"
        [ -n "$agent_port" ] || die "--agent needs --agent-port"
        copy_with_libs "$tree" "$(readlink -f "$agent")"
        cp "$(readlink -f "$agent")" "$tree/ovm/agent"
        strip --strip-debug "$tree/ovm/agent" 2>/dev/null || true
        rm -f "$tree$(readlink -f "$agent")"
        net=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$agent_port-:8899" -device e1000,netdev=n0)
    fi
    pack_cpio "$tree" "$run/payload.cpio.gz"
    initrd=$run/iso/boot/initrd.img
    cat "$CACHE/dom0/initrd.img" "$CACHE/guest/overlay.cpio.gz" "$run/payload.cpio.gz" >"$initrd"
    cp "$XEN_GZ" "$run/iso/boot/xen.gz"
    cp "$CACHE/dom0/vmlinuz" "$run/iso/boot/vmlinuz"
    # xpti=false: Xen's page-table isolation for PV guests flushes the TLB on every guest
    # kernel entry, which an emulated CPU pays dearly for (the whole run takes about a
    # third longer with it). Nothing else is turned off: with `pv-l1tf=false
    # spec-ctrl=no` and Linux's `mitigations=off` as well, dom0 processes died at random
    # (SIGSEGV, ld.so assertions) once a PV guest ran.
    cat >"$run/iso/boot/grub/grub.cfg" <<'EOF'
set timeout=0
set default=0
menuentry "Xen (ovm test bed)" {
    multiboot2 /boot/xen.gz dom0_mem=768M,max:768M dom0_max_vcpus=1 console=com1 com1=115200,8n1 loglvl=warning guest_loglvl=warning xpti=false @XEN_EXTRA@
    module2 /boot/vmlinuz console=hvc0 quiet loglevel=3
    module2 --nounzip /boot/initrd.img
}
EOF
    sed -i "s|@XEN_EXTRA@|${OVM_XEN_TESTBED_XEN_ARGS:-}|" "$run/iso/boot/grub/grub.cfg"
    grub-mkrescue -o "$run/xen.iso" "$run/iso" >"$run/grub-mkrescue.log" 2>&1 ||
        { cat "$run/grub-mkrescue.log" >&2; die "grub-mkrescue failed"; }
    log "booting Xen under QEMU (TCG), timeout ${timeout}s"
    local rc=0 out=${logfile:-$run/serial.log}
    # GRUB would gunzip the initramfs by the size in its last gzip member and cut it short:
    # --nounzip (above) hands the concatenated archives to Linux as they are.
    # Two emulated CPUs (each its own QEMU thread): dom0 (pinned to one vCPU by
    # dom0_max_vcpus=1) keeps running xl while a guest boots on the other; the run takes
    # about half as long as with one. OVM_XEN_TESTBED_SMP overrides.
    # -cpu max crashes the PV dom0 early; SMAP/SMEP must stay off.
    set +e
    timeout --foreground -k 10 "$timeout" \
        qemu-system-x86_64 -accel tcg -cpu Haswell-noTSX,-smap,-smep -m 1536 -smp "${OVM_XEN_TESTBED_SMP:-2}" \
        -nographic -no-reboot -cdrom "$run/xen.iso" -serial mon:stdio "${net[@]}" </dev/null |
        tee "$out"
    rc=${PIPESTATUS[0]}
    set -e
    log "QEMU exited with status $rc"
    return "$rc"
}

case ${1:-} in
check)
    need_tools
    kernel_version amd64 >/dev/null
    kernel_version cloud-amd64 >/dev/null
    echo "xen-testbed: ready"
    ;;
build) shift; cmd_build "$@" ;;
run) shift; cmd_run "$@" ;;
*)
    sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
