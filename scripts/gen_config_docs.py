"""Write docs/config.md from the config schema and examples/proxy.toml.

python scripts/gen_config_docs.py          # write the file
python scripts/gen_config_docs.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's clientlb, not an installed one

from clientlb._proxy._config_docs import markdown  # noqa: E402

DOC = ROOT / "docs" / "config.md"
EXAMPLE = ROOT / "examples" / "proxy.toml"


def main(argv: list[str]) -> int:
    text = markdown(EXAMPLE.read_text(encoding="utf-8"))
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else None
    if "--check" in argv:
        if current != text:
            print(f"{DOC.relative_to(ROOT)} is stale: run scripts/gen_config_docs.py")
            return 1
        return 0
    if current != text:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
