"""An instance-metadata double: what an EC2 host's IMDS (IMDSv2 only) would answer.

It vends the instance profile's credentials (a hoge-ec2-role session that moto accepts, given as
JSON in argv[1]) and a few fixed facts about the instance (region ap-northeast-1, instance id
i-0123456789abcdef0). It listens on 127.0.0.1, on a free port, or where argv[2] says
("169.254.169.254:80" inside a test's network namespace). It prints its port on the first line
of stdout, then serves until killed,
and logs every path it answers to stderr ("GET /latest/...") so tests can count upstream reads.

Usage: python imds_double.py '{"AccessKeyId": ..., "SecretAccessKey": ..., "SessionToken": ...}'
"""

import datetime
import json
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREDENTIALS = json.loads(sys.argv[1])
ROLE = "hoge-ec2-role"
INSTANCE_ID = "i-0123456789abcdef0"
REGION = "ap-northeast-1"
TOKENS = set()


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def stamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def answers():
    document = {
        "accountId": "111122223333",
        "instanceId": INSTANCE_ID,
        "region": REGION,
        "availabilityZone": REGION + "a",
        "instanceType": "t3.micro",
    }
    role_credentials = {
        "Code": "Success",
        "LastUpdated": stamp(now()),
        "Type": "AWS-HMAC",
        "AccessKeyId": CREDENTIALS["AccessKeyId"],
        "SecretAccessKey": CREDENTIALS["SecretAccessKey"],
        "Token": CREDENTIALS["SessionToken"],
        "Expiration": stamp(now() + datetime.timedelta(hours=1)),
    }
    return {
        "/latest/meta-data/": "ami-id\ninstance-id\niam/\nplacement/",
        "/latest/meta-data/instance-id": INSTANCE_ID,
        "/latest/meta-data/placement/region": REGION,
        "/latest/meta-data/placement/availability-zone": REGION + "a",
        "/latest/meta-data/iam/security-credentials/": ROLE,
        "/latest/meta-data/iam/security-credentials/" + ROLE: json.dumps(role_credentials),
        "/latest/dynamic/instance-identity/document": json.dumps(document),
    }


class Handler(BaseHTTPRequestHandler):
    def do_PUT(self):
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if self.path != "/latest/api/token" or not ttl:
            return self.reply(400, "bad request")
        token = secrets.token_urlsafe(32)
        TOKENS.add(token)
        self.reply(200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") not in TOKENS:
            return self.reply(401, "unauthorized")
        sys.stderr.write(f"GET {self.path}\n")
        sys.stderr.flush()
        known = answers()
        # Like the real IMDS, a leaf answers with or without a trailing slash (botocore asks
        # for placement/availability-zone/).
        body = known.get(self.path, known.get(self.path.rstrip("/")))
        if body is None:
            return self.reply(404, "not found")
        self.reply(200, body)

    def reply(self, status, body, headers=None):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_):
        pass


if __name__ == "__main__":
    host, _, port = (sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:0").rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
