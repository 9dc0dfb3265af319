"""What TLS costs a call: the same grpc.aio server on a plaintext and a TLS port, one run.

The server (its own process, `--serve`) is `replication.py`'s bare baseline (decode the
CallRequest and its JSON payload, increment, encode the reply) bound twice: a plaintext port
and a port with the credentials a gencluster pod serves its clients with (ECDSA P-256 from
`gencluster_operator.certificates`, the same `gencluster.tls.server_credentials` with its
per-handshake fetcher). `gencluster.AsyncClient` drives it, plaintext or with `ClientTls` as a
user's client would, `n` callers looping on `call("next_value")` on one long-lived channel
(the cost measured is TLS's per-call cost: encryption, not handshakes).

Rounds alternate plaintext and TLS (the order flips each pair) and the figure is the median
of the paired ratios TLS / plaintext, with the load average printed at the start and the end:
the machine is shared and noisy, only the ratio means something. The last line of stdout is
one JSON object.

    .venv/bin/python bench/tls_cost.py            # 5 pairs of 3 s windows, n = 1 and 32
    .venv/bin/python bench/tls_cost.py --pairs 9 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_NAME = "bench.tls.svc"


def write_certificates(directory: Path) -> None:
    from gencluster.tls_identity import CA_FILE, CERT_FILE, KEY_FILE
    from gencluster_operator import certificates

    now = time.time()
    ca = certificates.new_ca("bench", "tls", now)
    leaf = certificates.issue(ca, certificates.LeafRequest(
        common_name="bench", uri="spiffe://gencluster.io/ns/bench/csrv/tls/pod/bench-0",
        dns_names=(SERVER_NAME,)), now)
    (directory / CERT_FILE).write_bytes(leaf.cert_pem)
    (directory / KEY_FILE).write_bytes(leaf.key_pem)
    (directory / CA_FILE).write_bytes(ca.cert_pem)


async def serve(directory: str) -> None:
    import grpc
    from gencluster.codec import JsonCodec
    from gencluster.proto import gencluster_pb2 as pb
    from gencluster.proto import gencluster_pb2_grpc as pb_grpc
    from gencluster.tls import TlsFiles, server_credentials

    codec = JsonCodec()

    class BareCounter(pb_grpc.ClientServicer):
        def __init__(self) -> None:
            self.value = 0

        async def Call(self, request: pb.CallRequest, context: Any) -> pb.CallReply:
            if codec.decode(request.payload, what="request") != "next_value":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only next_value")
            self.value += 1
            return pb.CallReply(epoch=1, seq=self.value,
                                reply=codec.encode(self.value, what="reply"))

    server = grpc.aio.server()
    pb_grpc.add_ClientServicer_to_server(BareCounter(), server)
    plain = server.add_insecure_port("127.0.0.1:0")
    secure = server.add_secure_port(
        "127.0.0.1:0", server_credentials(TlsFiles(directory), require_client_cert=False))
    await server.start()
    print(plain, secure, flush=True)
    await server.wait_for_termination()


async def window(client: Any, in_flight: int, seconds: float) -> float:
    """Calls per second of `in_flight` callers over `seconds` (after a short warm-up)."""
    count = [0]
    counting = [False]
    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            await client.call("next_value")
            if counting[0]:
                count[0] += 1

    tasks = [asyncio.create_task(caller()) for _ in range(in_flight)]
    await asyncio.sleep(0.5)
    counting[0] = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    counting[0] = False
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*tasks)
    return count[0] / elapsed


async def bench(pairs: int, seconds: float, in_flights: list[int]) -> dict[str, Any]:
    from gencluster import AsyncClient, ClientTls
    from gencluster.tls_identity import CA_FILE

    result: dict[str, Any] = {"load_average_start": round(os.getloadavg()[0], 2),
                              "pairs": pairs, "seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="gencluster-tls-bench-") as directory:
        write_certificates(Path(directory))
        process = subprocess.Popen([sys.executable, __file__, "--serve", directory],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            plain_port, tls_port = (int(p) for p in process.stdout.readline().split())
            tls = ClientTls((Path(directory) / CA_FILE).read_bytes(), SERVER_NAME)
            async with AsyncClient(f"127.0.0.1:{plain_port}", timeout=30) as plain, \
                    AsyncClient(f"127.0.0.1:{tls_port}", timeout=30, tls=tls) as secure:
                for n in in_flights:
                    ratios, plain_rates, tls_rates = [], [], []
                    for index in range(pairs):
                        order = [("plain", plain), ("tls", secure)]
                        if index % 2:
                            order.reverse()
                        rates = {}
                        for name, client in order:
                            rates[name] = await window(client, n, seconds)
                        plain_rates.append(rates["plain"])
                        tls_rates.append(rates["tls"])
                        ratios.append(rates["tls"] / rates["plain"])
                        print(f"n={n} pair {index + 1}/{pairs}: plaintext {rates['plain']:.0f}"
                              f" calls/s, TLS {rates['tls']:.0f} calls/s, ratio "
                              f"{ratios[-1]:.3f}", file=sys.stderr, flush=True)
                    result[f"plain_{n}"] = round(statistics.median(plain_rates))
                    result[f"tls_{n}"] = round(statistics.median(tls_rates))
                    result[f"ratio_tls_to_plain_{n}"] = round(statistics.median(ratios), 3)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 32])
    arguments = parser.parse_args(argv)
    if arguments.serve:
        asyncio.run(serve(arguments.serve))
        return 0
    result = asyncio.run(bench(arguments.pairs, arguments.seconds, arguments.in_flight))
    print(f"load average: {result['load_average_start']} at the start, "
          f"{result['load_average_end']} at the end")
    for n in arguments.in_flight:
        print(f"n={n}: plaintext {result[f'plain_{n}']} calls/s, TLS {result[f'tls_{n}']} "
              f"calls/s; median of {arguments.pairs} paired ratios TLS/plaintext "
              f"{result[f'ratio_tls_to_plain_{n}']}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
