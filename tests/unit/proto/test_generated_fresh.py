"""Generated protobuf code must match its .proto sources (regenerate with `make proto`)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plastron.proto import generate

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "plastron" / "proto" / "generate.py"


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"stale generated files:\n{result.stdout}{result.stderr}"


def test_check_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--check must notice drift; run it on a copy with one generated file altered."""
    copy = tmp_path / "proto"
    shutil.copytree(SCRIPT.parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "spire" / "api" / "types" / "entry_pb2.py"
    target.write_text(target.read_text() + "\n# drift\n")
    (copy / "spire" / "api" / "types" / "orphan_pb2.py").write_text("")
    monkeypatch.setattr(generate, "PROTO_ROOT", copy)
    stale = generate.stale_files(generate.expected_outputs(generate.proto_files()))
    names = {p.as_posix() for p in stale}
    assert names == {"spire/api/types/entry_pb2.py", "spire/api/types/orphan_pb2.py"}


def test_grpcio_stubs_only_for_the_listed_protos() -> None:
    """grpcio stubs are test-only: exactly the protos in GRPCIO_STUB_PROTOS have one."""
    outputs = generate.expected_outputs(generate.proto_files())
    stubs = {rel.as_posix() for rel in outputs if rel.name.endswith("_pb2_grpc.py")}
    listed = {p.removesuffix(".proto") + "_pb2_grpc.py" for p in generate.GRPCIO_STUB_PROTOS}
    assert stubs == listed


def test_check_reports_an_unexpected_grpcio_stub(tmp_path: Path) -> None:
    """A *_pb2_grpc.py whose proto is not listed is reported as unexpected, exit status 1."""
    copy = tmp_path / "proto"
    shutil.copytree(SCRIPT.parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    stray = copy / "spire" / "api" / "types" / "entry_pb2_grpc.py"
    stray.write_text("# a grpcio stub no test imports\n")
    result = subprocess.run(
        [sys.executable, str(copy / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == "unexpected: plastron/proto/spire/api/types/entry_pb2_grpc.py\n"
