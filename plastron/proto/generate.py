"""Regenerate (or check) every generated module under plastron/proto/.

For each .proto below this directory, grpcio-tools' bundled protoc writes
``*_pb2.py`` + ``*_pb2.pyi`` (messages) and ``*_grpc.py`` (grpclib stubs: the
server, the agent and the CLI all use these). ``*_pb2_grpc.py`` (grpcio stubs)
are written only for the protos in ``GRPCIO_STUB_PROTOS``: tests use them as
interop clients, and nothing at run time imports grpcio. protoc runs with
``-I plastron/proto`` so descriptor file names match SPIRE's
(``spire/api/types/entry.proto``); the generated imports are then rewritten
from ``spire.api...`` to ``plastron.proto.spire.api...``.

The Workload API file has no proto package, so its message names
(``X509SVIDRequest``...) are global. The ``spiffe`` PyPI client registers the
same names in protobuf's default descriptor pool, and one process can't hold
both (likewise grpclib ships its own ``grpc.health.v1``). Our workload and
health modules therefore build their descriptors in a private pool
(``workload_pb2.POOL``); the wire format is unaffected. One consequence: its
``claims`` Struct is that pool's own class, so fill it with
``resp.claims.update(dict)`` rather than ``MergeFrom`` of a default-pool Struct.

Usage: ``python plastron/proto/generate.py [--check]``. With ``--check`` nothing
is written; the stale or missing files and any unexpected generated file (such
as a ``*_pb2_grpc.py`` whose proto is not in ``GRPCIO_STUB_PROTOS``) are listed
and the exit status is 1.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

PROTO_ROOT = Path(__file__).resolve().parent
PY_PACKAGE = "plastron.proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_grpc.py", "_pb2_grpc.py")
# .proto -> well-known protobuf modules its private pool must be seeded with.
PRIVATE_POOL_PROTOS: dict[str, tuple[str, ...]] = {
    "workload/workload.proto": ("struct_pb2",),
    "grpc/health/v1/health.proto": (),
}
# The only protos that get grpcio stubs (*_pb2_grpc.py), each for the tests that import
# them; any other *_pb2_grpc.py is reported by --check and deleted by a regeneration.
# Add a proto here when a test needs its grpcio client.
GRPCIO_STUB_PROTOS: tuple[str, ...] = (
    # tests/integration/agent/test_agent_workload_api.py: a grpcio Workload API client.
    "workload/workload.proto",
    # tests/integration/agent/test_agent_admin_socket.py (and admin_caller.py, run by it):
    # grpcio clients of the agent's admin socket.
    "spire/api/agent/debug/v1/debug.proto",
    "spire/api/agent/delegatedidentity/v1/delegatedidentity.proto",
    "spire/api/agent/logger/v1/logger.proto",
    # tests/unit/proto/test_proto_wire_contract.py: grpcio's method paths match grpclib's.
    "spire/api/server/agent/v1/agent.proto",
)


def proto_files() -> list[str]:
    """All .proto files, relative to PROTO_ROOT, in a stable order."""
    return sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))


def _plugin_path(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if not candidate.exists():
        raise SystemExit(f"generate: protoc plugin {name!r} not found next to {sys.executable}")
    return str(candidate)


def run_protoc(out_dir: Path, protos: list[str], *outputs: str) -> None:
    """Run protoc on `protos`, writing each ``--<kind>_out`` in `outputs` to `out_dir`."""
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-grpclib_python={_plugin_path('protoc-gen-grpclib_python')}",
        *(f"--{kind}_out={out_dir}" for kind in outputs),
        *protos,
    ]
    result = subprocess.run(args, cwd=PROTO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"generate: protoc failed:\n{result.stderr}")


def grpcio_stub_protos(protos: list[str]) -> list[str]:
    """The protos in GRPCIO_STUB_PROTOS; one that no longer exists is an error, not a skip."""
    missing = sorted(set(GRPCIO_STUB_PROTOS) - set(protos))
    if missing:
        raise SystemExit(f"generate: GRPCIO_STUB_PROTOS names a missing proto: {missing[0]}")
    return [proto for proto in protos if proto in GRPCIO_STUB_PROTOS]


def _module_names(protos: list[str]) -> list[str]:
    """Dotted names of the generated modules whose imports need a package prefix."""
    names = []
    for proto in protos:
        base = proto.removesuffix(".proto").replace("/", ".")
        names += [base + "_pb2", base + "_pb2_grpc", base + "_grpc"]
    # Longest first so `a.b_pb2_grpc` is rewritten before its prefix `a.b_pb2`.
    return sorted(names, key=len, reverse=True)


def rewrite_imports(text: str, modules: list[str]) -> str:
    """Point generated imports of our own modules at the plastron.proto package."""
    packages = sorted({m.rsplit(".", 1)[0] for m in modules}, key=len, reverse=True)
    for pkg in packages:
        text = re.sub(
            rf"^from {re.escape(pkg)} import ",
            f"from {PY_PACKAGE}.{pkg} import ",
            text,
            flags=re.MULTILINE,
        )
    for mod in modules:
        # Not after a word char or dot: leaves `grpc.` (the library) and already
        # prefixed names alone; catches `import x.y_pb2`, `x.y_pb2.Msg`, "'x.y_pb2'".
        text = re.sub(rf"(?<![\w.]){re.escape(mod)}\b", f"{PY_PACKAGE}.{mod}", text)
    return text


def use_private_pool(text: str, well_known: tuple[str, ...]) -> str:
    """Build this module's descriptors in its own pool instead of the default one."""
    marker = "_sym_db = _symbol_database.Default()\n"
    if marker not in text or "_descriptor_pool.Default().AddSerializedFile(" not in text:
        raise SystemExit("generate: unexpected protoc output shape for the private-pool rewrite")
    prelude = [
        "# Private pool: these names also exist in other packages' copies in the default",
        "# pool (`spiffe`, grpclib.health); see plastron/proto/generate.py.",
        "POOL = _descriptor_pool.DescriptorPool()",
    ]
    for mod in well_known:
        prelude.append(f"from google.protobuf import {mod} as _seed_{mod}")
        prelude.append(f"POOL.AddSerializedFile(_seed_{mod}.DESCRIPTOR.serialized_pb)")
    text = text.replace(marker, marker + "\n".join(prelude) + "\n", 1)
    return text.replace("_descriptor_pool.Default().AddSerializedFile(", "POOL.AddSerializedFile(")


def expected_outputs(protos: list[str]) -> dict[Path, str]:
    """Path (relative to PROTO_ROOT) -> content, for every generated file."""
    modules = _module_names(protos)
    outputs: dict[Path, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run_protoc(out, protos, "python", "pyi", "grpclib_python")
        run_protoc(out, grpcio_stub_protos(protos), "grpc_python")
        for path in sorted(out.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(out)
            text = rewrite_imports(path.read_text(), modules)
            proto = rel.as_posix().rsplit("_pb2", 1)[0] + ".proto"
            if rel.name.endswith("_pb2.py") and proto in PRIVATE_POOL_PROTOS:
                text = use_private_pool(text, PRIVATE_POOL_PROTOS[proto])
            outputs[rel] = text
    for rel in list(outputs):
        for parent in rel.parents:
            if parent != Path("."):
                outputs.setdefault(parent / "__init__.py", "")
    return outputs


def stale_files(outputs: dict[Path, str]) -> list[Path]:
    """Outputs whose file differs or is missing, plus generated-looking files not in `outputs`."""
    stale = [rel for rel, text in outputs.items() if _read(PROTO_ROOT / rel) != text]
    stray = [
        p.relative_to(PROTO_ROOT)
        for p in PROTO_ROOT.rglob("*")
        if p.name.endswith(GENERATED_SUFFIXES) and p.relative_to(PROTO_ROOT) not in outputs
    ]
    return sorted(stale + stray)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list stale files, write nothing")
    args = parser.parse_args(argv)
    outputs = expected_outputs(proto_files())
    stale = stale_files(outputs)
    if args.check:
        for rel in stale:
            # "unexpected": generated-looking but not an output (e.g. a grpcio stub whose
            # proto left GRPCIO_STUB_PROTOS); a regeneration deletes it.
            kind = "stale" if rel in outputs else "unexpected"
            print(f"{kind}: plastron/proto/{rel.as_posix()}")
        return 1 if stale else 0
    for rel in stale:
        target = PROTO_ROOT / rel
        if rel in outputs:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(outputs[rel])
        else:
            target.unlink()
    print(f"generate: {len(outputs)} files, {len(stale)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
