"""The Tart double's implementation (stdlib only; run as root).

State lives under ``TART_HOME`` (default ``~/.tart``): ``vms/NAME/config.json``
(CPU, memory, disk), ``vms/NAME/run.json`` (the ``tart run`` pid, namespace and
addresses while it runs), ``vms/NAME/root/`` (the VM's own files) and
``oci.json`` (the "pulled" OCI images).

A running VM is a network namespace with a veth pair: the host end is the
VM's gateway (it plays the Mac's 192.168.64.1), the VM end has the address
``tart ip`` prints; each VM gets its own /30 from ``TART_DOUBLE_SUBNET_BASE``
(default ``172.30``, i.e. 172.30.N.0/30). ``tart exec`` runs the command inside
that namespace and inside a private mount namespace where /etc and /var are
overlays whose upper layers are the VM's directories, and /opt,
/usr/local/bin, /usr/local/sbin, /home and /tmp are the VM's own directories:
whatever is installed "in the VM" lands under ``vms/NAME/root``. The VM has a
``sudo`` that just runs its command (everything runs as root). By default it
has no systemd (/run/systemd is an empty tmpfs).

With ``TART_DOUBLE_SYSTEMD=1`` in the environment of ``tart run`` (recorded in
run.json for the VM's whole run), the VM has systemd as far as fc-macos can
tell: /run/systemd is the VM's own directory ``root/run-systemd`` holding
``system/`` (emptied at each ``tart run``, like /run at boot), and
``systemctl``/``journalctl`` (tart_double/systemd.py, stdlib Python, installed
in the VM's /usr/local/sbin at each ``tart run``) start, stop and log units
from the VM's /etc/systemd/system; ``tart run`` starts the units enabled for
multi-user.target. Services run in the VM's namespaces, so ``tart stop`` kills
them with every other process of the VM. See systemd.py for what is emulated.

Knobs for tests: ``TART_DOUBLE_VERSION`` (what ``--version`` prints),
``TART_DOUBLE_NO_NESTED=1`` (``run --nested`` fails like a Mac without M3),
``TART_DOUBLE_FAIL_CLONE=1`` (``clone`` leaves a partial VM and fails),
``TART_DOUBLE_SYSTEMD=1`` (``run`` boots the VM with systemd, see above).
"""
