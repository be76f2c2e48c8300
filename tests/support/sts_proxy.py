"""An STS stand-in in front of moto that counts calls and injects faults.

Forwards every request to moto (argv[1], e.g. http://127.0.0.1:5000) and counts them by STS
Action. Its behaviour is switched at run time with `POST /__proxy/mode` (body: a mode name):

  pass      forward (the default)
  refuse    close the connection without an answer (STS unreachable)
  hang      accept and never answer (STS hangs)
  throttle  400 Throttling, as STS answers when a caller exceeds its rate
  error500  500 InternalFailure
  denied    403 AccessDenied (a trust policy or permission is missing)
  short     forward, but AssumeRole credentials expire in 15 minutes (a role whose maximum
            session is shorter than asked: the request itself is signed, so the answer is
            what changes); `short:N` makes them expire in N seconds
  empty     forward, but AssumeRole's access key id, secret and session token are empty
  delay:N   forward after N seconds (a slow STS)

`GET /__proxy/stats` answers {"AssumeRole": n, "GetCallerIdentity": n, ...}: calls that reached
the proxy, whatever the mode, "AssumeRole_last_ms": how long moto took to answer the last
forwarded AssumeRole (the STS round trip as the daemon sees it, minus loopback), and
"AssumeRole_sessions": the [RoleSessionName, SourceIdentity] of every AssumeRole, in order,
"AssumeRole_params": every AssumeRole's parameters but Action and Version (Tags.member.N.Key,
TransitiveTagKeys.member.N, PolicyArns.member.N.arn, Policy, ...: the query form STS reads), and
"times": per Action, when each call reached the proxy (monotonic seconds). Prints its port on the first line of stdout.

Usage: python sts_proxy.py http://127.0.0.1:MOTO_PORT
"""

import collections
import json
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import upstream

TARGET = sys.argv[1]
MODES = {"pass", "refuse", "hang", "throttle", "error500", "denied", "short", "empty", "delay"}
state = {"mode": "pass"}
counts = collections.Counter()
sessions = []
assumed = []
times = {}
lock = threading.Lock()

ERROR = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>
<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"""
FAULTS = {
    "throttle": (400, "Sender", "Throttling", "Rate exceeded"),
    "error500": (500, "Receiver", "InternalFailure", "An internal error occurred"),
    "denied": (
        403,
        "Sender",
        "AccessDenied",
        "User: arn:aws:sts::111122223333:assumed-role/hoge-ec2-role/i-0123456789abcdef0 "
        "is not authorized to perform: sts:AssumeRole on resource: "
        "arn:aws:iam::444455556666:role/piyo-role",
    ),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/__proxy/stats":
            with lock:
                stats = dict(counts, AssumeRole_sessions=list(sessions), AssumeRole_params=list(assumed), times={k: list(v) for k, v in times.items()})
                return self.reply(200, json.dumps(stats).encode(), "application/json")
        self.forward(b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/__proxy/mode":
            mode = body.decode().strip()
            if mode.split(":")[0] not in MODES:
                return self.reply(400, b"unknown mode", "text/plain")
            state["mode"] = mode
            return self.reply(200, mode.encode(), "text/plain")
        params = urllib.parse.parse_qs(body.decode())
        action = params.get("Action", ["?"])[0]
        with lock:
            counts[action] += 1
            times.setdefault(action, []).append(time.monotonic())
            if action == "AssumeRole":
                named = [params.get(key, [None])[0] for key in ("RoleSessionName", "SourceIdentity")]
                sessions.append(named)
                assumed.append({k: v[0] for k, v in params.items() if k not in ("Action", "Version")})
        mode = state["mode"]
        if mode == "refuse":
            self.close_connection = True
            return
        if mode == "hang":
            time.sleep(3600)
            return
        if mode in FAULTS:
            status, kind, code, message = FAULTS[mode]
            data = ERROR.format(kind=kind, code=code, message=message).encode()
            return self.reply(status, data, "text/xml")
        if mode.startswith("delay:"):
            time.sleep(float(mode.partition(":")[2]))
        started = time.perf_counter()
        life = None
        if mode.startswith("short") and action == "AssumeRole":
            life = int(mode.partition(":")[2] or 900)
        self.forward(body, life, blank=(mode == "empty" and action == "AssumeRole"))
        with lock:
            counts[action + "_last_ms"] = round((time.perf_counter() - started) * 1000, 2)

    def forward(self, body, life=None, blank=False):
        status, data, kind = upstream.ask(TARGET, self, body)
        if status < 400 and life is not None:
            soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + life))
            data = re.sub(rb"<Expiration>[^<]*</Expiration>", f"<Expiration>{soon}</Expiration>".encode(), data)
        if status < 400 and blank:
            for field in (b"AccessKeyId", b"SecretAccessKey", b"SessionToken"):
                data = re.sub(rb"<%s>[^<]*</%s>" % (field, field), b"<%s></%s>" % (field, field), data)
        self.reply(status, data, kind)

    def reply(self, status, data, content_type):
        upstream.reply(self, status, data, content_type)

    def log_message(self, *_):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
