"""Build hook: generate the gRPC stubs from the repository's ``proto/``.

The stubs are never committed. ``build_py`` runs ``grpc_tools.protoc`` over
every ``.proto`` file and writes the modules under the same paths as the
proto packages: ``peergrid/market/v1/market.proto`` becomes
``peergrid.market.v1.market_pb2`` (and ``..._pb2_grpc``, ``.pyi`` stubs).
Because the Python package is itself called ``peergrid``, the absolute
imports protoc writes (``from peergrid.market.v1 import market_pb2``) resolve
inside this package as they are: nothing is rewritten.

Where the protos come from, first match wins:

1. ``PEERGRID_PROTO_DIR`` (a directory holding ``peergrid/…/*.proto``);
2. ``../../proto`` (this directory inside a checkout of the repository);
3. ``proto/`` next to this file (an sdist: ``sdist`` copies them in).

A non-editable install writes the modules into the wheel's build directory;
an editable one (``pip install -e``) into ``src/peergrid`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


def proto_root() -> Path:
    candidates = []
    if os.environ.get("PEERGRID_PROTO_DIR"):
        candidates.append(Path(os.environ["PEERGRID_PROTO_DIR"]))
    candidates += [HERE.parent.parent / "proto", HERE / "proto"]
    for root in candidates:
        if (root / "peergrid").is_dir():
            return root.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise SystemExit(f"peergrid: no proto/peergrid directory found (tried {tried}); set PEERGRID_PROTO_DIR")


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc (the one bundled with grpcio-tools) into ``out_dir``;
    returns the files written."""
    # A build requirement (pyproject.toml).
    import grpc_tools
    from grpc_tools import protoc

    root = proto_root()
    protos = sorted(str(p.relative_to(root)) for p in (root / "peergrid").rglob("*.proto"))
    if not protos:
        raise SystemExit(f"peergrid: no .proto files under {root / 'peergrid'}")
    out_dir = out_dir.resolve()
    # The hand-written package is flat: every subdirectory of peergrid/ is
    # generated. Remove the previous run's, so a deleted proto leaves nothing.
    for old in (out_dir / "peergrid").glob("*"):
        if old.is_dir() and old.name != "__pycache__":
            shutil.rmtree(old)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    # protoc resolves the file names against -I; run from the proto root so
    # relative names match exactly.
    cwd = os.getcwd()
    os.chdir(root)
    try:
        if protoc.main(args) != 0:
            raise SystemExit(f"peergrid: protoc failed on {root} (see its message above)")
    finally:
        os.chdir(cwd)
    written = []
    # Make every generated directory a regular package.
    for dirpath, _, filenames in os.walk(out_dir / "peergrid"):
        d = Path(dirpath)
        if d == out_dir / "peergrid":
            continue
        init = d / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from the peergrid .proto files by setup.py; do not edit."""\n')
        written.append(init)
        written += [d / f for f in filenames if f.endswith((".py", ".pyi"))]
    return written


class BuildPyWithStubs(build_py):
    """``build_py`` that also generates the gRPC stubs."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            # Editable installs import straight from src/: generate there.
            generate(HERE / "src")
            return
        # protoc writes peergrid/<package>/v1/… under the output root, which
        # is where the wheel's `peergrid` package is assembled.
        self._stubs = generate(Path(self.build_lib))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return super().get_outputs(include_bytecode) + [str(p) for p in getattr(self, "_stubs", [])]


class SdistWithProtos(sdist):
    """``sdist`` that carries the protos, so the sdist builds on its own."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        target = Path(base_dir) / "proto"
        if not (target / "peergrid").is_dir():
            shutil.copytree(proto_root() / "peergrid", target / "peergrid")


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos})
