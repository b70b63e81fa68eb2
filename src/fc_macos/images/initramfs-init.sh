#!/bin/busybox sh
# fc-macos initramfs /init: load the virtio modules, wait for the root device,
# mount it and switch_root into it. Honours root=, rootfstype=, ro/rw and init=
# from the kernel command line, and hands the real init the arguments the kernel gave
# this one (init= may be fc-macos's shim, /sbin/fc-guest-agent, which passes them on).
# Modules are listed, in load order, in /modules.load.
/bin/busybox mkdir -p /proc /sys /dev /newroot /usr/bin /usr/sbin /sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

log() { echo "initramfs: $*" >/dev/kmsg 2>/dev/null || echo "initramfs: $*"; }

rescue() {
    echo "initramfs: $*" >&2
    echo "initramfs: starting a rescue shell" >&2
    exec setsid cttyhack sh
}

while read -r module; do
    [ -n "$module" ] || continue
    insmod "/lib/modules/$module" || log "loading $module failed"
done < /modules.load

root=/dev/vda
fstype=
mode=rw
init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root=${arg#root=} ;;
        rootfstype=*) fstype=${arg#rootfstype=} ;;
        init=*) init=${arg#init=} ;;
        ro) mode=ro ;;
        rw) mode=rw ;;
    esac
done

# Wait up to ~30 s for the root device (udev-less: devtmpfs creates the node).
device=
i=0
while [ $i -lt 300 ]; do
    case "$root" in
        /dev/*) [ -b "$root" ] && device=$root ;;
        *=*) device=$(findfs "$root" 2>/dev/null) ;;
    esac
    [ -n "$device" ] && break
    sleep 0.1 2>/dev/null || sleep 1
    i=$((i + 1))
done
[ -n "$device" ] || rescue "root device $root did not appear"

if [ -n "$fstype" ]; then
    mount -t "$fstype" -o "$mode" "$device" /newroot || rescue "cannot mount $device"
else
    mount -o "$mode" "$device" /newroot || rescue "cannot mount $device"
fi

[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || init=/init
mkdir -p /newroot/dev 2>/dev/null
mount --move /dev /newroot/dev
umount /sys
umount /proc
exec switch_root /newroot "$init" "$@"
