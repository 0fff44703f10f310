"""Generate the gRPC code for proto/mllgraph/v1/*.proto and check the checked-in copy.

The generated modules live in mllgraph/v1/ (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``)
and import each other as ``from mllgraph.v1 import common_pb2``. Regenerate after editing a
proto with ``python -m mllgraph.protos``; CI runs ``python -m mllgraph.protos --check``.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from mllgraph.errors import FailedPrecondition

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE_DIR = Path("mllgraph") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The .proto files of the mllgraph.v1 package, relative to `proto_root`, sorted."""
    source_dir = proto_root / PACKAGE_DIR
    if not source_dir.is_dir():
        raise FailedPrecondition(
            f"no proto sources at {source_dir}: run this from a source checkout of mllgraph"
        )
    files = sorted(p.relative_to(proto_root) for p in source_dir.glob("*.proto"))
    if not files:
        raise FailedPrecondition(f"no .proto files in {source_dir}")
    return files


def generated_names(protos: list[Path]) -> list[Path]:
    """Paths (relative to the output root) protoc writes for `protos`."""
    names: list[Path] = []
    for proto in protos:
        stem = proto.with_suffix("")
        names.extend(stem.parent / f"{stem.name}{suffix}" for suffix in GENERATED_SUFFIXES)
    return sorted(names)


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run grpc_tools.protoc on every proto; outputs land in `out_root`/mllgraph/v1/.

    Returns the written files (absolute paths), sorted.
    """
    from grpc_tools import protoc  # dev dependency: imported only when generating

    protos = proto_files(proto_root)
    out_root = Path(out_root)
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(p.as_posix() for p in protos),
    ]
    code = protoc.main(args)
    if code != 0:
        raise FailedPrecondition(f"protoc failed with exit code {code} (see its output above)")
    written = [out_root / name for name in generated_names(protos)]
    missing = [str(p) for p in written if not p.is_file()]
    if missing:
        raise FailedPrecondition(f"protoc did not write: {', '.join(missing)}")
    return written


def _checked_in(root: Path) -> set[Path]:
    """Generated-looking files currently in `root`/mllgraph/v1, relative to `root`."""
    package = root / PACKAGE_DIR
    if not package.is_dir():
        return set()
    return {
        p.relative_to(root)
        for p in package.iterdir()
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def check(repo_root: Path = REPO_ROOT) -> list[str]:
    """Regenerate into a temporary dir and compare with the checked-in files.

    Returns the differing files (relative posix paths, sorted): changed, missing from the
    checkout, or stale (checked in but no longer generated). Empty means up to date.
    """
    with tempfile.TemporaryDirectory(prefix="mllgraph-protos-") as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root, repo_root / "proto")
        fresh = _checked_in(fresh_root)
        current = _checked_in(repo_root)
        differing = {
            name
            for name in fresh & current
            if not filecmp.cmp(fresh_root / name, repo_root / name, shallow=False)
        }
        differing |= fresh ^ current
        return sorted(p.as_posix() for p in differing)


def main(argv: list[str] | None = None) -> int:
    """CLI: regenerate the checked-in code, or with --check only verify it."""
    parser = argparse.ArgumentParser(prog="python -m mllgraph.protos", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the checked-in generated code is out of date",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            differing = check()
            if differing:
                print(
                    "generated gRPC code is out of date: "
                    + ", ".join(differing)
                    + "\nregenerate with: python -m mllgraph.protos",
                    file=sys.stderr,
                )
                return 1
            print("generated gRPC code is up to date")
            return 0
        written = generate(REPO_ROOT)
        stale = _checked_in(REPO_ROOT) - {p.relative_to(REPO_ROOT) for p in written}
        for name in sorted(stale):
            (REPO_ROOT / name).unlink()
        for path in written:
            print(path.relative_to(REPO_ROOT).as_posix())
        return 0
    except FailedPrecondition as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
