#!/usr/bin/env python3
"""Convert Firecracker's Swagger spec (YAML) into the JSON file fc-macos ships.

    scripts/gen_firecracker_spec.py [YAML] [OUT]

YAML defaults to ``$FC_MACOS_FIRECRACKER_YAML`` or
``third_party/firecracker/firecracker-api.yaml`` (Firecracker v1.16.1,
``src/firecracker/swagger/firecracker.yaml`` at commit
2038188f145fb81b8d098147a10e9d9f392fd22f); OUT defaults to
``src/fc_macos/firecracker/firecracker-api.json``.

The JSON holds the same data as the YAML, nothing added or dropped. The only
change YAML->JSON forces is that mapping keys become strings (the YAML's
response codes ``200:`` are integers). PyYAML is a development dependency
only: the package reads the JSON with :mod:`json` at runtime.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_YAML = Path(os.environ.get("FC_MACOS_FIRECRACKER_YAML", str(Path(__file__).resolve().parents[1] / "third_party" / "firecracker" / "firecracker-api.yaml")))
DEFAULT_OUT = REPO / "src" / "fc_macos" / "firecracker" / "firecracker-api.json"


def convert(yaml_text: str) -> str:
    """Return the JSON text for ``yaml_text``: same data, keys in YAML order, 2-space indent."""
    return json.dumps(yaml.safe_load(yaml_text), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else DEFAULT_YAML
    out = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUT
    out.write_text(convert(src.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {out} from {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
