#!/usr/bin/env python3
"""A small HTTP load balancer for the end-to-end run (Python standard library only).

- Listens on one or more ports, each tagged with the client that uses it (vc1, vc2).
- Forwards each request to the Palisade replicas round-robin; when a replica refuses the
  connection or drops it mid-request, it retries on the next one (a failover). Retrying a
  signing on another replica is safe: the same message is either recorded already (a repeat,
  same signature) or recorded now.
- Logs every signing exchange as one JSON line: {source, pubkey, request, status, response,
  t0, t1, backend}. palisade-bench check reads this log.
- Replays conflicting versions of every block and attestation the client tagged by
  --replay-from had signed: same slot or target with a different head, and a surround vote.
  Every replay must be refused (412); it is logged with source "replayer".
"""

import argparse
import http.client
import http.server
import itertools
import json
import os
import queue
import socketserver
import threading
import time

SIGN_PREFIX = "/api/v1/eth2/sign/"


class Balancer:
    def __init__(self, backends, log_path, replay_from, stats_path):
        self.backends = backends
        self.counter = itertools.count()
        self.failovers = 0
        self.lock = threading.Lock()
        self.log = open(log_path, "a", buffering=1)
        self.replay_from = replay_from
        self.replays = queue.Queue()
        self.stats_path = stats_path
        self.counts = {}

    def forward(self, method, path, headers, body):
        start = next(self.counter)
        last_error = None
        for i in range(len(self.backends)):
            host, port = self.backends[(start + i) % len(self.backends)]
            try:
                conn = http.client.HTTPConnection(host, port, timeout=20)
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                ctype = resp.getheader("Content-Type", "application/json")
                conn.close()
                return resp.status, ctype, data, f"{host}:{port}"
            except (OSError, http.client.HTTPException) as e:
                last_error = e
                with self.lock:
                    self.failovers += 1
        body = json.dumps({"error": f"no replica answered: {last_error}"}).encode()
        return 502, "application/json", body, None

    def record(self, source, path, request_body, status, response_body, t0, t1, backend):
        try:
            request = json.loads(request_body)
        except ValueError:
            request = None
        try:
            response = json.loads(response_body)
        except ValueError:
            response = response_body.decode(errors="replace")
        line = {
            "source": source,
            "pubkey": path[len(SIGN_PREFIX):],
            "request": request,
            "status": status,
            "response": response,
            "t0": t0,
            "t1": t1,
            "backend": backend,
        }
        with self.lock:
            self.log.write(json.dumps(line) + "\n")
            key = f"{source}:{(request or {}).get('type', '?')}:{status}"
            self.counts[key] = self.counts.get(key, 0) + 1
        if (
            source == self.replay_from
            and status == 200
            and isinstance(request, dict)
            and request.get("type") in ("BLOCK", "BLOCK_V2", "ATTESTATION")
        ):
            self.replays.put((path, request))

    def sign(self, source, path, request):
        body = json.dumps(request).encode()
        t0 = time.time() * 1000
        status, _, data, backend = self.forward(
            "POST", path, {"Content-Type": "application/json"}, body
        )
        self.record(source, path, body, status, data, t0, time.time() * 1000, backend)

    def replayer(self):
        n = 0
        while True:
            path, req = self.replays.get()
            n += 1
            head = os.urandom(32).hex()
            for variant in conflicting(req, head):
                self.sign("replayer", path, variant)

    def write_stats(self):
        while True:
            time.sleep(1)
            with self.lock:
                stats = {"failovers": self.failovers, "counts": dict(self.counts)}
            tmp = self.stats_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(stats, f)
            os.replace(tmp, self.stats_path)


def strip_roots(req):
    req = json.loads(json.dumps(req))
    req.pop("signingRoot", None)
    req.pop("signing_root", None)
    return req


def conflicting(req, head):
    """Requests that conflict with `req`, as a client on another head would send them."""
    out = []
    if req["type"] == "ATTESTATION":
        double = strip_roots(req)
        double["attestation"]["beacon_block_root"] = "0x" + head
        out.append(double)
        source = int(req["attestation"]["source"]["epoch"])
        target = int(req["attestation"]["target"]["epoch"])
        if source >= 1:
            surround = strip_roots(req)
            surround["attestation"]["source"]["epoch"] = str(source - 1)
            surround["attestation"]["target"]["epoch"] = str(target + 1)
            surround["attestation"]["beacon_block_root"] = "0x" + head
            out.append(surround)
    elif req["type"] == "BLOCK_V2":
        double = strip_roots(req)
        block = double["beacon_block"]
        body = block.get("block_header") or block.get("block")
        body["state_root"] = "0x" + head
        out.append(double)
    elif req["type"] == "BLOCK":
        double = strip_roots(req)
        double["block"]["state_root"] = "0x" + head
        out.append(double)
    return out


def make_handler(balancer, source):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept", "authorization")}
            t0 = time.time() * 1000
            status, ctype, data, backend = balancer.forward(self.command, self.path, headers, body)
            t1 = time.time() * 1000
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if self.path.startswith(SIGN_PREFIX):
                balancer.record(source, self.path, body, status, data, t0, t1, backend)

        do_GET = handle_any
        do_POST = handle_any
        do_DELETE = handle_any

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", action="append", required=True, help="HOST:PORT=TAG")
    ap.add_argument("--backend", action="append", required=True, help="HOST:PORT")
    ap.add_argument("--log", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--replay-from", default=None)
    args = ap.parse_args()
    backends = [(b.split(":")[0], int(b.split(":")[1])) for b in args.backend]
    balancer = Balancer(backends, args.log, args.replay_from, args.stats)
    threading.Thread(target=balancer.replayer, daemon=True).start()
    threading.Thread(target=balancer.write_stats, daemon=True).start()
    servers = []
    for spec in args.listen:
        addr, tag = spec.split("=")
        host, port = addr.split(":")
        server = Server((host, int(port)), make_handler(balancer, tag))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    print(f"balancing {args.listen} over {args.backend}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
