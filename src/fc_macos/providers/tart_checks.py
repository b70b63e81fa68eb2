"""The host checks of the ``tart`` provider: macOS, the chip and Tart itself.

On macOS, ``sw_vers`` and ``sysctl machdep.cpu.brand_string`` must show macOS
15+ and an M3 or later chip (nested virtualization). On any other host (tests,
CI) these checks are *not applicable* and are reported as such; there ``tart
run --nested`` itself is the check, and its failure (Tart's "M3 chip, and
later" / "macOS 15" messages) becomes a SetupError with the same hint.
"""

from __future__ import annotations

import re
import subprocess
import sys

from fc_macos.providers.base import Check

MIN_TART = (2, 27, 0)
MIN_MACOS = 15
MIN_CHIP = 3
NESTED_HINT = ("nested virtualization needs a Mac with an M3 chip or later, macOS 15 or later and "
               "Tart >= 2.27 ('tart run --nested'); fc-macos cannot run Firecracker on this Mac otherwise")
TART_UPGRADE = "upgrade Tart: 'brew upgrade cirruslabs/cli/tart'"


def _command(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def check_macos(platform: str = sys.platform) -> Check:
    """macOS 15 or later (nested virtualization); not applicable elsewhere."""
    if platform != "darwin":
        return Check("macos", True, f"not applicable on {platform}: 'tart run --nested' will tell")
    version = _command(["sw_vers", "-productVersion"]) or ""
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major < MIN_MACOS:
        return Check("macos", False, f"macOS {version or 'unknown'}: nested virtualization needs macOS 15+",
                     "upgrade macOS to 15 (Sequoia) or later")
    return Check("macos", True, f"macOS {version}")


def check_chip(platform: str = sys.platform) -> Check:
    """An Apple M3 chip or later; not applicable off macOS."""
    if platform != "darwin":
        return Check("chip", True, f"not applicable on {platform}: 'tart run --nested' will tell")
    brand = _command(["sysctl", "-n", "machdep.cpu.brand_string"]) or "unknown"
    match = re.search(r"\bM(\d+)\b", brand)
    if not match or int(match[1]) < MIN_CHIP:
        return Check("chip", False, f"{brand}: nested virtualization needs an M3 chip or later",
                     "use a Mac with an M3 chip or later (or the 'local' provider on a Linux machine with KVM)")
    return Check("chip", True, brand)


def check_tart_version(version: tuple[int, int, int]) -> Check:
    text = ".".join(map(str, version))
    if version < MIN_TART:
        return Check("tart", False, f"Tart {text} lacks 'tart exec' (needs >= 2.27.0)", TART_UPGRADE)
    return Check("tart", True, f"Tart {text}")


def nested_failure(log_text: str) -> bool:
    """True if ``tart run``'s output says the host cannot do nested virtualization."""
    text = log_text.lower()
    return "m3 chip" in text or "macos 15" in text or "nested virtualization" in text
