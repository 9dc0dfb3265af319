"""`gencluster run`'s TLS settings (docs/runtime-config.md): validated before anything starts,
each bad value a clear error naming its variable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gencluster.run import ConfigError, build_config
from gencluster_operator import certificates as certs

from tests.operator.test_runtime_limits import VALID

pytestmark = pytest.mark.unit


def tls_dir(directory: Path) -> Path:
    now = time.time()
    ca = certs.new_ca("default", "ids", now)
    leaf = certs.issue(ca, certs.pod_request("default", "ids", "ids-0", peer_service="ids-peers",
                                             client_service="ids"), now)
    (directory / "tls.crt").write_bytes(leaf.cert_pem)
    (directory / "tls.key").write_bytes(leaf.key_pem)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    return directory


def test_without_a_tls_directory_the_runtime_is_plaintext() -> None:
    assert build_config(VALID).tls is None


def test_tls_settings_and_their_defaults(tmp_path: Path) -> None:
    config = build_config({**VALID, "GENCLUSTER_TLS_DIR": str(tls_dir(tmp_path)),
                           "GENCLUSTER_PEER_SERVICE": "ids-peers"})
    assert config.tls is not None
    assert (config.tls.peer_port, config.tls.health_port) == (50052, 50053)
    assert config.tls.peer_server_name == "ids-peers.default.svc"
    assert config.tls.client_auth == "None"


def test_the_tls_directory_is_found_through_the_dev_mounts(tmp_path: Path) -> None:
    mounted = tls_dir(tmp_path)
    config = build_config({**VALID, "GENCLUSTER_TLS_DIR": "/etc/gencluster/tls",
                           "GENCLUSTER_PEER_SERVICE": "ids-peers",
                           "GENCLUSTER_DEV_MOUNTS": f'{{"/etc/gencluster/tls": "{mounted}"}}'})
    assert config.tls is not None and config.tls.directory == str(mounted)


@pytest.mark.parametrize(("change", "variable"), [
    ({"GENCLUSTER_TLS_DIR": "/nonexistent"}, "GENCLUSTER_TLS_DIR"),
    ({"GENCLUSTER_PEER_PORT": "9090"}, "GENCLUSTER_HEALTH_PORT"),
    ({"GENCLUSTER_HEALTH_PORT": "50051"}, "GENCLUSTER_HEALTH_PORT"),
    ({"GENCLUSTER_PEER_PORT": "0"}, "GENCLUSTER_PEER_PORT"),
    ({"GENCLUSTER_CLIENT_AUTH": "Token"}, "GENCLUSTER_CLIENT_AUTH"),
    ({"GENCLUSTER_PEER_SERVICE": ""}, "GENCLUSTER_PEER_SERVER_NAME"),
    ({"GENCLUSTER_CLUSTER": "", "GENCLUSTER_POD_SELECTOR": "a=b"}, "GENCLUSTER_CLUSTER"),
])
def test_a_bad_tls_setting_is_a_clear_startup_error(
    tmp_path: Path, change: dict[str, str], variable: str
) -> None:
    values = {**VALID, "GENCLUSTER_TLS_DIR": str(tls_dir(tmp_path)),
              "GENCLUSTER_PEER_SERVICE": "ids-peers", "GENCLUSTER_PEER_PORT": "50052",
              "GENCLUSTER_HEALTH_PORT": "50053", **change}
    with pytest.raises(ConfigError, match=variable):
        build_config(values)


def test_an_empty_certificate_file_is_refused(tmp_path: Path) -> None:
    directory = tls_dir(tmp_path)
    (directory / "tls.key").write_bytes(b"")
    with pytest.raises(ConfigError, match="GENCLUSTER_TLS_DIR"):
        build_config({**VALID, "GENCLUSTER_TLS_DIR": str(directory),
                      "GENCLUSTER_PEER_SERVICE": "ids-peers"})
