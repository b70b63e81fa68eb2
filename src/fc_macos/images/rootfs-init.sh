#!/bin/busybox sh
# fc-macos guest /init (also /sbin/init). Stays PID 1: mounts the pseudo file systems,
# sets the hostname, starts the guest agent (/sbin/fc-guest-agent --supervise, which
# restarts its server whenever it dies), prints a banner and keeps a shell on the serial
# console. Signals to PID 1 shut the guest down: SIGINT (Ctrl-Alt-Del, what Firecracker's
# SendCtrlAltDel sends) and SIGTERM reboot, SIGUSR2 powers off, SIGUSR1 halts.
#
# The console shell runs under `getty -n -l /bin/sh 115200 <tty> vt100` (or `setsid -c sh`
# where getty is missing), so the tty is its controlling terminal, and it must start with
# SIGINT at its default: this shell has no job control, so anything it starts with `&`
# ignores SIGINT and SIGQUIT, busybox sh keeps a signal ignored on entry ignored, and
# Ctrl+C then interrupted nothing. So daemons are started by `detach` (a foreground
# `setsid setsid`: it forks, returns at once, and signals stay at their defaults), and the
# console's respawn loop is this script again (`/init --console TTY`), detached likewise.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=vt100
export PS1='\h:\w\$ '

# `/init --console TTY`: keep a shell on TTY, a new one whenever the last one ends.
# Started by PID 1 through `detach`; prints its pid first (PID 1 checks on it).
console_loop() {
    echo $$
    exec </dev/null >/dev/null
    # A getty program on disk (busybox's standalone shell would "find" a getty applet
    # even without its link, so look for the file).
    getty=
    for dir in /sbin /usr/sbin /bin /usr/bin; do
        [ -x "$dir/getty" ] && { getty=$dir/getty; break; }
    done
    while :; do
        if [ -n "$getty" ]; then
            "$getty" -n -l /bin/sh 115200 "$1" vt100
        else
            setsid -c sh <"/dev/$1" >"/dev/$1" 2>&1
        fi
        sleep 1
    done
}
if [ "${1:-}" = --console ] && [ $$ -ne 1 ]; then
    console_loop "${2:-console}"
    exit 1
fi

# Run "$@" in a new session, in the background, and return at once: the first setsid
# makes a session, the second (now a group leader) forks, and its child runs "$@".
detach() { setsid setsid "$@"; }

[ -e /proc/self ] || /bin/busybox mount -t proc proc /proc
# Applet links missing (a bare busybox tree): make them now that /proc/self/exe exists.
[ -e /bin/sh ] || /bin/busybox --install -s 2>/dev/null
mounted() { grep -qs "^[^ ]* $1 " /proc/mounts; }
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mounted /dev/pts || mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mounted /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mounted /run || mount -t tmpfs -o mode=755 tmpfs /run
mounted /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp

if [ -s /etc/hostname ]; then hostname -F /etc/hostname; else hostname fc-microvm; fi
ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null

# The network from the kernel's ip=<guest>::<gateway>:<netmask>::<dev>:off[:<dns0>[:<dns1>]]
# (Firecracker's recipe; fc-agent appends it for network=true) when the kernel did not
# apply it itself (no CONFIG_IP_PNP, or virtio_net is a module the initramfs loaded).
# nameserver=<ip> parameters add DNS servers; /etc/resolv.conf is written only if any.
mask_bits() {
    bits=0
    for octet in $(echo "$1" | tr . ' '); do
        case "$octet" in
            255) bits=$((bits + 8)) ;; 254) bits=$((bits + 7)) ;; 252) bits=$((bits + 6)) ;;
            248) bits=$((bits + 5)) ;; 240) bits=$((bits + 4)) ;; 224) bits=$((bits + 3)) ;;
            192) bits=$((bits + 2)) ;; 128) bits=$((bits + 1)) ;;
        esac
    done
    echo "$bits"
}
configure_network() {
    conf= dns=
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
            ip=*) conf=${arg#ip=} ;;
            nameserver=*) dns="$dns ${arg#nameserver=}" ;;
        esac
    done
    [ -n "$conf" ] || return 0
    saved_ifs=$IFS
    IFS=:
    # shellcheck disable=SC2086
    set -- $conf
    IFS=$saved_ifs
    address=$1 gateway=$3 netmask=${4:-255.255.255.0} dev=${6:-eth0}
    dns="${8:-} ${9:-}$dns"
    case "$address" in *.*.*.*) ;; *) return 0 ;; esac  # dhcp, off ...: not ours to do
    i=0
    while [ ! -e "/sys/class/net/$dev" ] && [ $i -lt 50 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i + 1)); done
    if [ ! -e "/sys/class/net/$dev" ]; then
        echo "fc-microvm: network device $dev not found (is virtio_net in the kernel or the initramfs?)"
        return 0
    fi
    ip link set "$dev" up
    if ! ip -4 addr show dev "$dev" | grep -q " $address/"; then
        ip addr add "$address/$(mask_bits "$netmask")" dev "$dev"
    fi
    if [ -n "$gateway" ] && ! ip route | grep -q '^default'; then
        ip route add default via "$gateway" dev "$dev"
    fi
    servers=
    for server in $dns; do servers="${servers}nameserver $server
"; done
    [ -z "$servers" ] || printf '%s' "$servers" > /etc/resolv.conf
    echo "fc-microvm: $dev $address/$(mask_bits "$netmask")${gateway:+ via $gateway}"
}
configure_network

# The guest agent: exec, files and ports over vsock (docs/guest-agent-protocol.md).
[ -x /sbin/fc-guest-agent ] && detach /sbin/fc-guest-agent --supervise </dev/null >/dev/null

tty=ttyS0
if [ -r /sys/class/tty/console/active ]; then
    for t in $(cat /sys/class/tty/console/active); do tty=$t; done
fi
[ -c "/dev/$tty" ] || tty=console

shutdown_guest() {
    echo "fc-microvm: $1"
    sync
    umount -a -r 2>/dev/null
    "$1" -f
}
trap 'shutdown_guest reboot' INT TERM
trap 'shutdown_guest poweroff' USR2
trap 'shutdown_guest halt' USR1

echo
echo "Welcome to Firecracker microVM! ($(uname -sr), $(hostname))"
echo

# Whether a process still has /dev/$1 as its controlling terminal (field 7 of
# /proc/PID/stat, the device number encoded as the kernel's new_encode_dev).
tty_in_use() {
    dev=$(cat "/sys/class/tty/$1/dev" 2>/dev/null) || return 1
    major=${dev%:*} minor=${dev#*:}
    nr=$(( (major << 8) | (minor & 255) | ((minor >> 8) << 20) ))
    for stat in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$stat" || continue
        # shellcheck disable=SC2086
        set -- ${line##*) }
        [ "${5:-}" = "$nr" ] && return 0
    done
    return 1
}

# The console: its loop is started again when it is gone (checked every few
# seconds) and no shell it started still holds the tty (no second getty on it).
# `wait` returns early when a trapped signal arrives; the trap then shuts down.
# (`kill -0 ""` would signal pid 0, this process group, and succeed.)
console_pid=
while :; do
    if ! { [ -n "$console_pid" ] && kill -0 "$console_pid" 2>/dev/null; } && ! tty_in_use "$tty"; then
        console_pid=$(detach "$0" --console "$tty")
    fi
    sleep 5 &
    wait $!
done
