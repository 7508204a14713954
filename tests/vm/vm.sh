#!/usr/bin/env bash
# Boots a tiny Linux VM with a pure cgroup v2 hierarchy under qemu software emulation (TCG), to
# test skiff's cgroup v2 code path from a hybrid-cgroup host. See tests/vm/README.md.
#
#   tests/vm/vm.sh prepare
#       Fetches Debian's kernel (linux-image-amd64's linux-image-6.1.0-*-amd64) and unpacks it
#       into the cache (${SKIFF_VM_CACHE:-/var/cache/skiff-vm}); idempotent.
#   tests/vm/vm.sh run [--bin PATH] [--file SRC:DEST ...] [--module NAME ...] [--timeout SECS]
#                      GUEST_SCRIPT
#       Builds an initramfs (busybox-static, PATH as /usr/bin/skiff, the files, the modules),
#       boots it, prints the guest's console output and exits with GUEST_SCRIPT's exit code
#       (124 when the guest never reported one: timeout or kernel panic).
#
# Environment: SKIFF_VM_CACHE (cache directory), SKIFF_VM_MEMORY (MiB, default 1024),
# SKIFF_VM_BOOT (pvh or bzimage; default pvh when the cache has a PVH-bootable vmlinux),
# SKIFF_VM_APPEND (extra kernel command line), SKIFF_VM_KEEP=1 (keep the work directory).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

CACHE=${SKIFF_VM_CACHE:-/var/cache/skiff-vm}
# Modules always loaded (with their dependencies); --module adds more.
DEFAULT_MODULES=(overlay virtio_pci virtio_net)
MARKER=SKIFF_VM_EXIT

die() { echo "vm.sh: $*" >&2; exit 2; }
log() { echo "vm.sh: $*" >&2; }

usage() {
    sed -n '5,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# --- host tools --------------------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED == 0 ]]; then
        log "apt-get update"
        apt-get update -qq >&2
        APT_UPDATED=1
    fi
}

ensure_tools() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v cpio >/dev/null || missing+=(cpio)
    command -v depmod >/dev/null || missing+=(kmod)
    [[ -x /bin/busybox ]] && /bin/busybox --list 2>/dev/null | grep -x switch_root >/dev/null \
        || missing+=(busybox-static)
    [[ ${#missing[@]} == 0 ]] && return 0
    [[ $(id -u) == 0 ]] || die "missing packages ${missing[*]} and not root to install them"
    log "installing ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; then
        apt_update_once
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
}

# --- prepare: kernel into the cache ------------------------------------------------------------

# Prints the name of the linux-image-6.1.0-*-amd64 package linux-image-amd64 depends on.
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}

# Extracts the uncompressed ELF vmlinux from a bzImage (the logic of the kernel's
# scripts/extract-vmlinux): find each compressor's magic and try to decompress from there.
extract_vmlinux() {
    local img=$1 out=$2 magic tool off
    local -a tries=(
        '\037\213\010' 'gzip -dc'
        '\3757zXZ\000' 'xz -dc'
        'BZh' 'bzip2 -dc'
        '\135\000\000\000' 'xz --format=lzma -dc'
        '\050\265\057\375' 'zstd -dc'
        '\002\041\114\030' 'lz4 -dc'
    )
    local i
    for ((i = 0; i < ${#tries[@]}; i += 2)); do
        magic=${tries[i]}
        tool=${tries[i + 1]}
        command -v "${tool%% *}" >/dev/null || continue
        for off in $(LC_ALL=C grep -aboP "$(printf '%b' "$magic" | od -An -tx1 \
            | tr -d ' \n' | sed 's/../\\x&/g')" "$img" 2>/dev/null | cut -d: -f1 | head -n 8); do
            tail -c "+$((off + 1))" "$img" | $tool >"$out" 2>/dev/null || true
            if [[ $(head -c 4 "$out" 2>/dev/null | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then
                return 0
            fi
        done
    done
    rm -f "$out"
    return 1
}

# True when the vmlinux has the PVH entry ELF note (XEN_ELFNOTE_PHYS32_ENTRY, type 18), which
# qemu's -kernel needs to boot an ELF kernel directly.
has_pvh_note() {
    if command -v readelf >/dev/null; then
        # (grep without -q: under pipefail an early exit would fail readelf with SIGPIPE.)
        LC_ALL=C readelf -n "$1" 2>/dev/null \
            | grep -iE 'PHYS32_ENTRY|Unknown note type: \(0x00000012\)' >/dev/null
    else
        # Without binutils, trust the kernel configuration.
        grep -qx 'CONFIG_PVH=y' "$2"
    fi
}

do_prepare() {
    ensure_tools
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    if [[ -f $CACHE/ready && -f $CACHE/root/kver ]]; then
        return 0
    fi
    local t0=$SECONDS pkg dl unpack
    pkg=$(kernel_package)
    if [[ -z $pkg ]]; then
        apt_update_once
        pkg=$(kernel_package)
    fi
    [[ -n $pkg ]] || die "cannot find the kernel package linux-image-amd64 depends on"
    dl=$CACHE/download
    rm -rf "$dl" "$CACHE/root" "$CACHE/root.tmp"
    mkdir -p "$dl"
    log "downloading linux-image-amd64 and $pkg"
    if ! (cd "$dl" && apt-get -o APT::Sandbox::User=root download -qq linux-image-amd64 "$pkg" >&2); then
        apt_update_once
        pkg=$(kernel_package)
        (cd "$dl" && apt-get -o APT::Sandbox::User=root download -qq linux-image-amd64 "$pkg" >&2) \
            || die "apt-get download $pkg failed"
    fi
    unpack=$CACHE/root.tmp
    log "unpacking $pkg"
    dpkg -x "$dl/${pkg}"_*.deb "$unpack"
    local vmlinuz kver
    vmlinuz=$(ls "$unpack"/boot/vmlinuz-* | head -n1)
    [[ -f $vmlinuz ]] || die "no /boot/vmlinuz-* in $pkg"
    kver=${vmlinuz##*/vmlinuz-}
    [[ -d $unpack/lib/modules/$kver ]] || die "no /lib/modules/$kver in $pkg"
    # The package ships modules.order and modules.builtin but not modules.dep: generate it.
    if [[ ! -s $unpack/lib/modules/$kver/modules.dep ]]; then
        depmod -b "$unpack" "$kver"
    fi
    if extract_vmlinux "$vmlinuz" "$unpack/vmlinux" \
        && has_pvh_note "$unpack/vmlinux" "$unpack/boot/config-$kver"; then
        log "extracted a PVH-bootable vmlinux"
    else
        rm -f "$unpack/vmlinux"
        log "no PVH-bootable vmlinux: runs will boot the bzImage"
    fi
    echo "$kver" >"$unpack/kver"
    rm -rf "$dl"
    mv "$unpack" "$CACHE/root"
    echo "$pkg $kver" >"$CACHE/ready"
    log "kernel $kver ready in $CACHE ($((SECONDS - t0)) s)"
}

# --- run ---------------------------------------------------------------------------------------

# Writes to $2 the .ko paths (relative to /lib/modules/KVER) needed for the modules named in
# $3..., in load order and without repeats, and to $1 the names the guest must see loaded.
# kmod's modprobe resolves aliases, dependencies and soft pre-dependencies against the cache
# (busybox's modprobe in the guest would ignore softdeps).
module_load_order() {
    local wanted=$1 order=$2 m out last
    local pre="$CACHE/root/lib/modules/$KVER/"
    : >"$wanted"
    : >"$order"
    for m in "${@:3}"; do
        out=$(modprobe -d "$CACHE/root" -S "$KVER" --show-depends "$m" 2>&1) \
            || die "module $m: $out"
        last=$(awk '$1 == "insmod" { p = $2 } END { print p }' <<<"$out")
        if [[ -n $last ]]; then
            last=${last##*/}
            last=${last%%.ko*}
            echo "${last//-/_}" >>"$wanted"
        fi
        awk -v pre="$pre" '$1 == "insmod" { p = $2; sub("^" pre, "", p); print p }' \
            <<<"$out" >>"$order"
    done
    awk '!seen[$0]++' "$order" >"$order.tmp"
    mv "$order.tmp" "$order"
}

write_init() {
    cat >"$1" <<'INIT'
#!/bin/sh
# /init of the skiff test VM (written by tests/vm/vm.sh).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
fail() { echo "skiff-vm init: $*"; echo "SKIFF_VM_INIT_FAILED"; poweroff -f; sleep 5; exit 1; }

if [ ! -e /.skiff-vm-stage2 ]; then
    # Stage 1, on the initramfs rootfs: pivot_root (which skiff uses) fails with EINVAL when /
    # is the rootfs itself, so copy everything into a tmpfs and switch_root into it.
    mount -t proc proc /proc || fail "mount proc"
    mount -t sysfs sysfs /sys || fail "mount sysfs"
    mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs"
    mkdir -p /newroot
    mount -t tmpfs -o mode=0755,size=90% root /newroot || fail "mount tmpfs root"
    for e in /* /.[!.]*; do
        case $e in /newroot|/proc|/sys|/dev|'/.[!.]*') continue ;; esac
        cp -a "$e" /newroot/ || fail "copy $e"
    done
    mkdir -p /newroot/proc /newroot/sys /newroot/dev
    : >/newroot/.skiff-vm-stage2
    mount --move /proc /newroot/proc || fail "move proc"
    mount --move /sys /newroot/sys || fail "move sys"
    mount --move /dev /newroot/dev || fail "move dev"
    exec switch_root /newroot /init
    fail "switch_root"
fi

# Stage 2, on the tmpfs root.
stty -onlcr 2>/dev/null
mkdir -p /dev/pts /dev/shm /run
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=0755 run /run

mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup \
    || fail "mount cgroup2"
for c in cpu memory pids io $(cat /sys/fs/cgroup/cgroup.controllers); do
    case " $enabled " in *" $c "*) continue ;; esac
    if echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
        enabled="$enabled $c"
    else
        echo "skiff-vm init: cannot enable cgroup controller $c"
    fi
done

kver=$(cat /etc/skiff-vm/kver)
# In dependency order (computed on the host); a soft dependency may fail (crc32c-intel on a CPU
# without SSE4.2), so only the modules asked for must end up loaded.
while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "/lib/modules/$kver/$ko" 2>/tmp/insmod.err \
        || echo "skiff-vm init: insmod $ko: $(cat /tmp/insmod.err)"
done </etc/skiff-vm/modules
rm -f /tmp/insmod.err
while read -r m; do
    [ -d "/sys/module/$m" ] || fail "module $m did not load"
done </etc/skiff-vm/modules.wanted

ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    i=0
    while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 50 ]; do
        usleep 20000; i=$((i + 1))
    done
else
    echo "skiff-vm init: no eth0"
fi

# The root is a tmpfs already: /tmp and /var are writable as they are. No tmpfs over them,
# which would hide files passed in under those paths (test binaries built in /tmp/...).
mkdir -p /tmp /var/lib /var/tmp /var/run
chmod 1777 /tmp /var/tmp

export HOME=/root TERM=dumb
cd /
/bin/sh /guest.sh </dev/null
rc=$?
sync
echo
echo "SKIFF_VM_EXIT=$rc"
poweroff -f
sleep 10
INIT
    chmod 0755 "$1"
}

do_run() {
    local bin= timeout=300 script=
    local -a files=() modules=("${DEFAULT_MODULES[@]}")
    while [[ $# -gt 0 ]]; do
        case $1 in
        --bin) bin=${2:?--bin needs a path}; shift ;;
        --file) files+=("${2:?--file needs SRC:DEST}"); shift ;;
        --module) modules+=("${2:?--module needs a name}"); shift ;;
        --timeout) timeout=${2:?--timeout needs seconds}; shift ;;
        -h|--help) usage ;;
        --) shift; script=${1:-}; shift || true; break ;;
        -*) die "unknown option $1" ;;
        *) [[ -z $script ]] || die "more than one GUEST_SCRIPT ($script, $1)"; script=$1 ;;
        esac
        shift
    done
    [[ $# == 0 ]] || die "unexpected arguments after GUEST_SCRIPT: $*"
    [[ -n $script ]] || usage
    [[ -f $script ]] || die "guest script $script not found"
    [[ $timeout =~ ^[0-9]+$ && $timeout -gt 0 ]] || die "bad --timeout $timeout"
    if [[ -n $bin ]]; then
        [[ -f $bin && -x $bin ]] || die "--bin $bin is not an executable file"
        if command -v readelf >/dev/null && LC_ALL=C readelf -l "$bin" 2>/dev/null \
            | grep 'Requesting program interpreter' >/dev/null; then
            die "--bin $bin is dynamically linked; the guest has no libraries (build for x86_64-unknown-linux-musl)"
        fi
    fi

    do_prepare
    exec 9>&-
    KVER=$(cat "$CACHE/root/kver")
    local kroot=$CACHE/root moddir=$CACHE/root/lib/modules/$KVER

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/skiff-vm.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    local stage=$WORK/root
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,etc/skiff-vm,proc,sys,dev,root,tmp,var,run}
    mkdir -p "$stage/lib/modules/$KVER"

    # busybox and its applets.
    cp /bin/busybox "$stage/bin/busybox"
    (cd "$stage" && /bin/busybox --list-full | perl -ne 'chomp; next if $_ eq "bin/busybox";
        symlink("/bin/busybox", $_) or die "symlink $_: $!\n"')
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    mknod -m 600 "$stage/dev/console" c 5 1
    mknod -m 666 "$stage/dev/null" c 1 3
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$stage/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
    printf '127.0.0.1 localhost\n::1 localhost\n' >"$stage/etc/hosts"
    echo skiff-vm >"$stage/etc/hostname"

    # Modules, in load order.
    local ko
    module_load_order "$stage/etc/skiff-vm/modules.wanted" "$WORK/modules.order" "${modules[@]}"
    : >"$stage/etc/skiff-vm/modules"
    while IFS= read -r ko; do
        mkdir -p "$stage/lib/modules/$KVER/$(dirname "$ko")"
        case $ko in
        *.ko) cp "$moddir/$ko" "$stage/lib/modules/$KVER/$ko" ;;
        *.ko.xz) xz -dc "$moddir/$ko" >"$stage/lib/modules/$KVER/${ko%.xz}"; ko=${ko%.xz} ;;
        *.ko.zst) zstd -qdc "$moddir/$ko" >"$stage/lib/modules/$KVER/${ko%.zst}"; ko=${ko%.zst} ;;
        *.ko.gz) gzip -dc "$moddir/$ko" >"$stage/lib/modules/$KVER/${ko%.gz}"; ko=${ko%.gz} ;;
        *) die "unsupported module file $ko" ;;
        esac
        echo "$ko" >>"$stage/etc/skiff-vm/modules"
    done <"$WORK/modules.order"
    echo "$KVER" >"$stage/etc/skiff-vm/kver"

    # skiff, the extra files, the guest script and /init.
    if [[ -n $bin ]]; then
        cp "$bin" "$stage/usr/bin/skiff"
        chmod 0755 "$stage/usr/bin/skiff"
    fi
    local f src dest
    for f in "${files[@]}"; do
        src=${f%%:*}
        dest=${f#*:}
        [[ $f == *:* && -n $src && $dest == /* ]] || die "--file wants SRC:/ABSOLUTE/DEST, got $f"
        [[ -e $src ]] || die "--file source $src not found"
        mkdir -p "$stage$(dirname "$dest")"
        cp -a "$src" "$stage$dest"
    done
    cp "$script" "$stage/guest.sh"
    chmod 0755 "$stage/guest.sh"
    write_init "$stage/init"

    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) \
        >"$WORK/initrd.cpio"

    # Boot.
    local boot=${SKIFF_VM_BOOT:-}
    if [[ -z $boot ]]; then
        if [[ -f $kroot/vmlinux && -f /usr/share/qemu/qboot.rom ]]; then boot=pvh; else boot=bzimage; fi
    fi
    local -a qemu=(qemu-system-x86_64 -accel tcg -cpu max -m "${SKIFF_VM_MEMORY:-1024}" -smp 1
        -nodefaults -nographic -serial stdio -no-reboot
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=
        -initrd "$WORK/initrd.cpio"
        -append "console=ttyS0 cgroup_no_v1=all panic=-1 quiet rdinit=/init ${SKIFF_VM_APPEND:-}")
    case $boot in
    pvh)
        [[ -f $kroot/vmlinux ]] || die "SKIFF_VM_BOOT=pvh but the cache has no vmlinux"
        qemu+=(-bios /usr/share/qemu/qboot.rom -kernel "$kroot/vmlinux") ;;
    bzimage) qemu+=(-kernel "$(ls "$kroot"/boot/vmlinuz-* | head -n1)") ;;
    *) die "SKIFF_VM_BOOT must be pvh or bzimage" ;;
    esac

    local console=$WORK/console.log qrc t0=$SECONDS
    # Console to our stdout as it comes (without the serial line's carriage returns) and to a
    # log where the exit marker is looked up. In the background so that a signal to this
    # script runs its trap (which stops qemu) at once.
    {
        timeout -k 5 "$timeout" "${qemu[@]}" </dev/null 2>"$WORK/qemu.err" &
        echo $! >"$WORK/timeout.pid"
        st=0
        wait $! || st=$?
        echo "$st" >"$WORK/qemu.rc"
    } | sed -u 's/\r$//; s/\r/\n/g' | tee "$console" &
    wait $! || true
    qrc=$(cat "$WORK/qemu.rc" 2>/dev/null || echo "?")
    rm -f "$WORK/timeout.pid"
    local rc
    rc=$(grep -a -E "^$MARKER=[0-9]+\$" "$console" | tail -n1 | cut -d= -f2 || true)
    if [[ -n $rc ]]; then
        return "$rc"
    fi
    if [[ $qrc == 124 || $qrc == 137 ]]; then
        log "no $MARKER line: timeout, the VM did not finish within ${timeout} s (--timeout); killed after $((SECONDS - t0)) s"
    elif grep -aq 'Kernel panic' "$console"; then
        log "no $MARKER line: the guest kernel panicked (see the console output above)"
    elif grep -aq SKIFF_VM_INIT_FAILED "$console"; then
        log "no $MARKER line: the VM's /init failed (see the console output above)"
    else
        log "no $MARKER line: qemu exited with status $qrc before the guest script finished"
    fi
    if [[ -s $WORK/qemu.err ]]; then
        log "qemu's stderr:"
        sed 's/^/  /' "$WORK/qemu.err" >&2
    fi
    return 124
}

cleanup() {
    # Stop our qemu (through its timeout process, which passes the signal on) if still running.
    if [[ -n ${WORK:-} && -f $WORK/timeout.pid ]]; then
        kill -TERM "$(cat "$WORK/timeout.pid")" 2>/dev/null || true
        sleep 0.5
    fi
    if [[ -n ${WORK:-} && -d $WORK ]]; then
        if [[ ${SKIFF_VM_KEEP:-0} == 1 ]]; then
            log "work directory kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
}

WORK=
case ${1:-} in
prepare) shift; [[ $# == 0 ]] || usage; do_prepare ;;
run) shift; do_run "$@" ;;
*) usage ;;
esac
