"""Regenerate the Python code for `gencluster.proto`: `python -m gencluster.proto.generate`.

The proto is compiled with the package root (`runtime/`) as its include path, so protoc sees
it as `gencluster/proto/gencluster.proto` and writes package-qualified imports
(`from gencluster.proto import gencluster_pb2`) into the gRPC module: the generated files
import correctly inside the package without any rewriting. The descriptor's file name is
the same path, which is also what server reflection reports.

Generated files are committed and never edited by hand; a test regenerates them into a
temporary directory and compares.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("gencluster/proto/gencluster.proto")
GENERATED = ("gencluster_pb2.py", "gencluster_pb2.pyi", "gencluster_pb2_grpc.py")


def generate(output_root: Path = PACKAGE_ROOT) -> list[Path]:
    """Compile the proto into `output_root`/gencluster/proto/; return the files written."""
    from grpc_tools import protoc  # a build/test dependency only, not needed at runtime

    target = output_root / PROTO.parent
    target.mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PACKAGE_ROOT}",
            f"--python_out={output_root}",
            f"--pyi_out={output_root}",
            f"--grpc_python_out={output_root}",
            str(PROTO),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status} compiling {PROTO}")
    return [target / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-root",
        type=Path,
        default=PACKAGE_ROOT,
        help="directory that receives gencluster/proto/*_pb2*.py (default: the source tree)",
    )
    options = parser.parse_args(argv)
    for path in generate(options.output_root):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
