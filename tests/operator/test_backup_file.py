"""The `gencluster-backup/v1` file (`gencluster.backup`) and the restore's choice of pod, without
a cluster: what `kubectl gencluster backup` writes, what `restore` accepts and refuses, and
which pod it streams to for each situation the runtime can report."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from gencluster import backup
from gencluster import kubectl_plugin as plugin
from gencluster.proto import gencluster_pb2 as pb

pytestmark = pytest.mark.unit

TAKEN = datetime(2026, 12, 3, 9, 30, 0, tzinfo=UTC)


def export(state: bytes = b'{"next":42}', epoch: int = 7, seq: int = 120) -> list[
    pb.SnapshotChunk
]:
    """An ExportState stream as the runtime sends it: header, replies, events, state chunks."""
    header = pb.SnapshotHeader(applied_seq=seq, applied_epoch=epoch - 1, server_version=2,
                               codec="json", state_size=len(state))
    middle = len(state) // 2
    return [
        pb.SnapshotChunk(epoch=epoch, header=header),
        pb.SnapshotChunk(epoch=epoch, replies=pb.ReplyBatch()),
        pb.SnapshotChunk(epoch=epoch, events=pb.EventBatch()),
        pb.SnapshotChunk(epoch=epoch, state=state[:middle]),
        pb.SnapshotChunk(epoch=epoch, state=state[middle:]),
    ]


def written(chunks: list[pb.SnapshotChunk] | None = None) -> bytes:
    out = io.BytesIO()
    backup.write_backup(out, export() if chunks is None else chunks, cluster="id-server",
                        namespace="prod", server="gencluster_examples.id_server:IdServer",
                        taken_at=TAKEN)
    return out.getvalue()


def test_the_header_line_describes_the_backup() -> None:
    data = written()
    line, _, body = data.partition(b"\n")
    header = json.loads(line)
    assert header == {
        "format": "gencluster-backup/v1", "cluster": "id-server", "namespace": "prod",
        "epoch": 7, "applied_seq": 120, "applied_epoch": 6,
        "server": "gencluster_examples.id_server:IdServer", "server_version": 2,
        "codec": "json", "taken_at": "2026-12-03T09:30:00Z", "chunks": 5, "state_size": 11,
        "sha256": hashlib.sha256(body).hexdigest(),
    }


def test_the_body_is_the_length_prefixed_snapshot_stream() -> None:
    body = written().partition(b"\n")[2]
    chunks, offset = [], 0
    while offset < len(body):
        size = int.from_bytes(body[offset : offset + 4], "big")
        chunks.append(pb.SnapshotChunk.FromString(body[offset + 4 : offset + 4 + size]))
        offset += 4 + size
    assert chunks == export()


def test_a_backup_reads_back_as_written() -> None:
    header, chunks = backup.read_backup(written())
    assert chunks == export()
    assert (header.cluster, header.epoch, header.applied_seq, header.chunks) == (
        "id-server", 7, 120, 5)


def corrupt(data: bytes, how: str) -> bytes:
    line, _, body = data.partition(b"\n")
    header = json.loads(line)
    if how == "truncated":
        return data[:-3]
    if how == "flipped byte":
        return data[:-1] + bytes([data[-1] ^ 1])
    if how == "no header":
        return body
    if how == "other format":
        header["format"] = "gencluster-backup/v9"
    if how == "missing field":
        del header["applied_seq"]
    if how == "negative field":
        header["chunks"] = -1
    if how == "chunk count":
        header["chunks"] = 4
    if how == "header lies about the position":
        header["applied_seq"] = 1
    return json.dumps(header).encode() + b"\n" + body


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "does not match its sha256"),
        ("flipped byte", "does not match its sha256"),
        ("no header", "header"),
        ("other format", "not a gencluster-backup/v1 backup"),
        ("missing field", "lacks applied_seq"),
        ("negative field", "non-negative"),
        ("chunk count", "holds 5 chunks, its header says 4"),
        ("header lies about the position", "does not describe its snapshot"),
    ],
)
def test_a_damaged_backup_is_refused_saying_why(how: str, message: str) -> None:
    with pytest.raises(backup.BackupError, match=message):
        backup.read_backup(corrupt(written(), how))


def test_an_export_that_is_not_a_snapshot_is_not_written() -> None:
    chunks = export()
    with pytest.raises(backup.BackupError, match="header chunk"):
        written(chunks[1:])
    with pytest.raises(backup.BackupError, match="state chunks hold"):
        written(chunks[:-1])
    mixed = [*chunks[:-1], pb.SnapshotChunk(epoch=8, state=chunks[-1].state)]
    with pytest.raises(backup.BackupError, match="mixes epochs"):
        written(mixed)
    with pytest.raises(backup.BackupError, match="more than one header"):
        written([*chunks, chunks[0]])


def test_an_empty_state_is_a_valid_backup() -> None:
    header, chunks = backup.read_backup(written(export(state=b"")))
    assert header.state_size == 0 and chunks == export(state=b"")


def test_the_restore_stream_is_the_origin_then_the_chunks() -> None:
    stream = list(backup.restore_chunks(export(), request_id="r1", force=True, source="f"))
    assert stream[0] == pb.RestoreChunk(
        origin=pb.RestoreOrigin(request_id="r1", force=True, source="f"))
    assert [c.snapshot for c in stream[1:]] == export()


# -- which pod a restore goes to ------------------------------------------------------------------


def reply(role: str = "standby", *, epoch: int = 3, lost: bool = False, port: int = 1) -> dict[
    str, Any
]:
    return {"address": f"10.0.0.{port}:50051", "identity": f"id-{port}", "role": role,
            "epoch": epoch, "appliedSeq": 0, "stateLost": lost}


def unreachable(port: int) -> dict[str, Any]:
    return {"address": f"10.0.0.{port}:50051", "error": "UNAVAILABLE: connection refused"}


def test_a_serving_cluster_is_restored_only_with_force_and_through_its_active() -> None:
    replies = {"id-0": reply(port=0), "id-1": reply("active", port=1), "id-2": reply(port=2)}
    with pytest.raises(backup.RestoreRefused, match=r"id-1 is active.*--force"):
        backup.restore_target(replies, force=False)
    target = backup.restore_target(replies, force=True)
    assert (target.pod, target.address) == ("id-1", "10.0.0.1:50051")


def test_of_two_actives_the_higher_epoch_takes_a_forced_restore() -> None:
    replies = {"id-0": reply("active", epoch=4, port=0), "id-1": reply("active", epoch=5,
                                                                       port=1)}
    assert backup.restore_target(replies, force=True).pod == "id-1"


def test_a_lost_cluster_is_restored_through_a_pod_that_lost_its_state() -> None:
    replies = {"id-0": unreachable(0), "id-1": reply(lost=True, port=1),
               "id-2": reply(lost=True, port=2)}
    target = backup.restore_target(replies, force=False)
    assert (target.pod, target.why) == ("id-1", "it reports state_lost")
    assert backup.restore_target(replies, force=True).pod == "id-1"


def test_a_new_cluster_is_restored_through_any_pod_that_answers() -> None:
    replies = {"id-0": unreachable(0), "id-1": reply("joining", port=1), "id-2": reply(port=2)}
    target = backup.restore_target(replies, force=False)
    assert target.pod == "id-1" and "new cluster" in target.why


def test_no_pod_answering_is_a_refusal_naming_each_pod() -> None:
    with pytest.raises(backup.RestoreRefused, match=r"id-0 \(UNAVAILABLE"):
        backup.restore_target({"id-0": unreachable(0)}, force=True)
    with pytest.raises(backup.RestoreRefused, match="no pods"):
        backup.restore_target({}, force=True)


# -- the command line -----------------------------------------------------------------------------


def test_backup_and_restore_take_kubectl_style_flags() -> None:
    arguments = plugin.parser().parse_args(["backup", "id", "-o", "x.backup", "-n", "prod"])
    assert (arguments.command, arguments.name, arguments.output, arguments.namespace) == (
        "backup", "id", "x.backup", "prod")
    arguments = plugin.parser().parse_args(["restore", "id", "x.backup", "--force"])
    assert (arguments.name, arguments.file, arguments.force) == ("id", "x.backup", True)
    assert plugin.parser().parse_args(["restore", "id", "x.backup"]).force is False
    with pytest.raises(SystemExit):
        plugin.parser().parse_args(["backup", "id"])  # -o is required


def test_a_damaged_file_is_refused_before_any_cluster_is_contacted(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cluster(arguments: Any) -> Any:
        raise AssertionError("the cluster was contacted")

    monkeypatch.setattr(plugin, "connect", no_cluster)
    path = tmp_path / "bad.backup"
    path.write_bytes(corrupt(written(), "truncated"))
    assert plugin.main(["restore", "id", str(path)]) == 1
    assert "does not match its sha256" in capsys.readouterr().err
    assert plugin.main(["restore", "id", str(tmp_path / "missing.backup")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_status_shows_the_replicas_that_lost_the_state() -> None:
    pod = plugin_pod("id-0")
    replies = {"id-0": {"role": "standby", "epoch": 4, "appliedSeq": 0, "stateLost": True}}
    (row,) = plugin.pod_rows({"status": {}}, [pod], replies)
    assert row["stateLost"] is True
    report = {"name": "id", "namespace": "prod", "cluster": plugin.summary_of({}),
              "pods": [row]}
    assert "standby (state lost)" in plugin.render_status(report)
    (healthy,) = plugin.pod_rows({"status": {}}, [pod], {"id-0": {"role": "standby"}})
    assert "stateLost" not in healthy


def plugin_pod(name: str) -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name),
        status=SimpleNamespace(conditions=[], container_statuses=[], pod_ip="10.0.0.1"),
    )
