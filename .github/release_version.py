"""The release tag must equal the version everywhere the repository writes it down: the
Python package, the chart (version and appVersion), and the default runtime image of the CRD
and of the operator's spec reader (which the tests keep equal to each other). Standard library
only: it runs on a bare CI runner before anything is installed.

    python3 .github/release_version.py 0.1.0
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACES = {
    "pyproject.toml version": (ROOT / "pyproject.toml", r'(?m)^version = "([^"]+)"'),
    "Chart.yaml version": (ROOT / "charts/gencluster/Chart.yaml", r"(?m)^version: (\S+)"),
    "Chart.yaml appVersion": (ROOT / "charts/gencluster/Chart.yaml",
                              r'(?m)^appVersion: "?([^"\s]+)"?'),
    "CRD default image": (ROOT / "crds/clusteredservers.gencluster.io.yaml",
                          r"default: ghcr\.io/gencluster/gencluster:(\S+)"),
    "operator DEFAULT_IMAGE": (ROOT / "operator/gencluster_operator/spec.py",
                               r'DEFAULT_IMAGE = "ghcr\.io/gencluster/gencluster:([^"]+)"'),
}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for place, (path, pattern) in PLACES.items():
        match = re.search(pattern, path.read_text())
        found[place] = match.group(1) if match else None
    return found


def mismatches(version: str) -> list[str]:
    return [f"{place}: {found!r}, the tag says {version!r}"
            for place, found in versions().items() if found != version]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not re.fullmatch(r"\d+\.\d+\.\d+", argv[0]):
        print("usage: release_version.py X.Y.Z", file=sys.stderr)
        return 2
    problems = mismatches(argv[0])
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
