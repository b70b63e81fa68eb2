#!/bin/busybox sh
# fc-macos guest /init (also /sbin/init). Stays PID 1: mounts the pseudo file systems,
# sets the hostname, prints a banner and keeps a shell on the console through getty
# (`getty -n -l /bin/sh 115200 <tty> vt100`), or through `setsid cttyhack sh` where
# getty is missing. Signals to PID 1 shut the guest down: SIGINT (Ctrl-Alt-Del, what
# Firecracker's SendCtrlAltDel sends) and SIGTERM reboot, SIGUSR2 powers off, SIGUSR1 halts.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=vt100
export PS1='\h:\w\$ '

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

# A getty program on disk (busybox's standalone shell would "find" a getty applet even
# without its link, so look for the file).
getty=
for dir in /sbin /usr/sbin /bin /usr/bin; do
    [ -x "$dir/getty" ] && { getty=$dir/getty; break; }
done

while :; do
    if [ -n "$getty" ]; then
        "$getty" -n -l /bin/sh 115200 "$tty" vt100 &
    elif command -v cttyhack >/dev/null 2>&1; then
        setsid cttyhack sh <"/dev/$tty" >"/dev/$tty" 2>&1 &
    else
        setsid sh <"/dev/$tty" >"/dev/$tty" 2>&1 &
    fi
    child=$!
    # `wait` returns early when a trapped signal arrives; the trap then shuts down.
    while kill -0 "$child" 2>/dev/null; do wait "$child"; done
    sleep 1
done
