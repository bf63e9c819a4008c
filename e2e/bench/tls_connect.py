#!/usr/bin/env python3
"""An ordinary TLS client's connection rate on a mutual-TLS port (issue 18).

Beside strait-load's rustls client: CPython's `ssl` (OpenSSL), one fresh SSLContext
session per connection and no session resumption (no `session=` is ever passed), as an
application would connect. Each connection: TCP connect (TCP_NODELAY), a full TLS
handshake presenting the client certificate and verifying the server's chain and name,
one byte each way (the backend's `p` ping), close. N threads in a closed loop, bounded in
time and count; prints one key=value line like `strait-load connect`.

    tls_connect.py --connect 127.0.0.1:PORT --tls DIR --sni NAME --concurrency 8 --seconds 3
"""
import argparse
import socket
import ssl
import sys
import threading
import time

STEP_TIMEOUT = 10.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", required=True, help="HOST:PORT of the TLS listener")
    parser.add_argument("--tls", required=True, help="Secret directory: tls.crt, tls.key, ca.crt")
    parser.add_argument("--sni", required=True, help="SNI and the verified server name")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max", type=int, default=200_000, help="upper bound on connections")
    args = parser.parse_args()
    host, port = args.connect.rsplit(":", 1)
    address = (host, int(port))

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(f"{args.tls}/tls.crt", f"{args.tls}/tls.key")
    context.load_verify_locations(f"{args.tls}/ca.crt")
    context.check_hostname = True

    deadline = time.monotonic() + args.seconds
    lock = threading.Lock()
    issued = [0]
    latencies, errors = [], []

    def worker():
        mine, failed = [], []
        while time.monotonic() < deadline:
            with lock:
                if issued[0] >= args.max:
                    break
                issued[0] += 1
            try:
                mine.append(ping(address, context, args.sni))
            except (OSError, ssl.SSLError, ValueError) as e:
                failed.append(str(e))
        with lock:
            latencies.extend(mine)
            errors.extend(failed)

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    latencies.sort()

    def ms(q):
        if not latencies:
            return 0.0
        rank = min(max(int(-(-len(latencies) * q // 1)), 1), len(latencies))
        return latencies[rank - 1] * 1e3

    print(f"conns={len(latencies)} errors={len(errors)} seconds={seconds:.3f} rate={len(latencies) / seconds:.1f} "
          f"p50_ms={ms(0.50):.3f} p99_ms={ms(0.99):.3f}")
    if errors:
        print(f"{len(errors)} connections failed; first: {errors[0]}", file=sys.stderr)


def ping(address, context, sni):
    """Connect, handshake, one byte each way, close: the measured unit, in seconds."""
    t0 = time.perf_counter()
    with socket.create_connection(address, timeout=STEP_TIMEOUT) as tcp:
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(tcp, server_hostname=sni) as tls:
            tls.sendall(b"p")
            reply = tls.recv(1)
            if len(reply) != 1:
                raise ValueError("no reply byte")
            elapsed = time.perf_counter() - t0
    return elapsed


if __name__ == "__main__":
    main()
