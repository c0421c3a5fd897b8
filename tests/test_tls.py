"""rediss:// with a CA, a client certificate and a password, against Debian's redis-server built
with TLS; a self-signed CA is generated for the test with openssl. Skipped, with the reason,
where the server or openssl cannot do TLS."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis as sync_redis

from tests.proc_utils import REPO, cli_env
from userrl.bus.embedded import find_server_binary, free_port
from userrl.config import load_config
from userrl.deploy.launcher import Launcher
from userrl.errors import ConfigError
from userrl.lifecycle import die_with_parent
from userrl.runtime import make_bus

pytestmark = [pytest.mark.integration]

PASSWORD = "tls-test-password"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=userrl test CA", cwd=d
    )
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "authorityKeyIdentifier=keyid\nextendedKeyUsage=serverAuth\n"
    )
    (d / "client.ext").write_text(
        "basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\nextendedKeyUsage=clientAuth\n"
    )
    for who in ("server", "client"):
        openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}", cwd=d)
        openssl(
            "x509",
            "-req",
            "-in",
            f"{who}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{who}.pem",
            "-days",
            "2",
            "-extfile",
            f"{who}.ext",
            cwd=d,
        )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make a test CA with")
    binary = find_server_binary()
    d = tmp_path_factory.mktemp("tls")
    make_certs(d)
    port = free_port()
    conf = d / "redis.conf"
    conf.write_text(
        f'port 0\ntls-port {port}\nbind 127.0.0.1\nrequirepass {PASSWORD}\nsave ""\n'
        f"appendonly no\ntls-cert-file {d}/server.pem\ntls-key-file {d}/server.key\n"
        f"tls-ca-cert-file {d}/ca.pem\ntls-auth-clients yes\ndir {d}\n"
    )
    proc = subprocess.Popen(
        [binary, str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent()
    )
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    kwargs = {
        "ssl_ca_certs": str(d / "ca.pem"),
        "ssl_certfile": str(d / "client.pem"),
        "ssl_keyfile": str(d / "client.key"),
    }
    try:
        for _ in range(100):
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
                pytest.skip(f"{binary} cannot serve TLS here: {out.strip().splitlines()[-1:]}")
            try:
                with sync_redis.Redis.from_url(url, socket_timeout=1, **kwargs) as r:
                    r.ping()
                break
            except sync_redis.ConnectionError:
                anyio.run(anyio.sleep, 0.1)
        yield url, d
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]


def tls_overrides(d: Path) -> list[str]:
    return [
        f"redis_tls.ca_file={d}/ca.pem",
        f"redis_tls.cert_file={d}/client.pem",
        f"redis_tls.key_file={d}/client.key",
    ]


def test_bus_over_tls_with_ca_and_client_certificate(tls_server: tuple[str, Path], run_name: str) -> None:
    url, d = tls_server
    cfg = load_config(None, [f"redis={url}", f"run={run_name}", *tls_overrides(d)])

    async def main() -> None:
        bus = make_bus(cfg)
        try:
            assert await bus.redis.ping()
            await bus.redis.set(bus.keys.prefix + "x", "over tls")
            assert await bus.redis.get(bus.keys.prefix + "x") == b"over tls"
        finally:
            await bus.redis.aclose()

    anyio.run(main)


def test_without_the_ca_the_server_is_not_trusted(tls_server: tuple[str, Path], run_name: str) -> None:
    url, d = tls_server
    cfg = load_config(
        None,
        [
            f"redis={url}",
            f"run={run_name}",
            f"redis_tls.cert_file={d}/client.pem",
            f"redis_tls.key_file={d}/client.key",
        ],
    )

    async def main() -> None:
        bus = make_bus(cfg)
        try:
            with pytest.raises(sync_redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
                await bus.redis.ping()
        finally:
            await bus.redis.aclose()

    anyio.run(main)


def test_launcher_and_cli_over_tls(tls_server: tuple[str, Path], run_name: str, tmp_path: Path) -> None:
    url, d = tls_server
    ovs = [f"redis={url}", f"run={run_name}", f"run_dir={tmp_path}", *tls_overrides(d)]
    la = Launcher(load_config(None, ovs + [f"workers.{r}.replicas=0" for r in ("env", "policy", "user", "reward")]))
    la.start()
    try:
        assert la._link is not None and la._link.supervisor()
    finally:
        la.stop()
    args = [a for ov in ovs for a in ("--set", ov)]
    out = subprocess.run(
        [sys.executable, "-m", "userrl", "check", "env", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 1, out.stderr  # Redis answered over TLS; no env worker runs
    assert "no live heartbeat" in out.stdout


def test_tls_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="redis_tls.ca_file"):
        load_config(None, ["redis=rediss://127.0.0.1:1/0", f"redis_tls.ca_file={tmp_path}/missing.pem"])
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(ConfigError, match="rediss://"):
        load_config(None, ["redis=redis://127.0.0.1:1/0", f"redis_tls.ca_file={tmp_path}/ca.pem"])
    with pytest.raises(ConfigError, match="cert_file and redis_tls.key_file"):
        load_config(None, ["redis=rediss://127.0.0.1:1/0", f"redis_tls.cert_file={tmp_path}/ca.pem"])
