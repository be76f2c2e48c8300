"""What the test proxies (sts_proxy.py, connect_proxy.py) share: sending a request on to moto
as it came, and answering their own client."""

import urllib.error
import urllib.request


def ask(target, handler, body):
    """`handler`'s request sent to `target` (moto) with its headers, the Host header included
    (it is part of the SigV4 signature moto checks): (status, body, content type)."""
    headers = {k: v for k, v in handler.headers.items() if k.lower() != "content-length"}
    request = urllib.request.Request(target + handler.path, data=body or None, headers=headers, method=handler.command)
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, answer.read(), answer.headers.get("Content-Type", "text/xml")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "text/xml")


def reply(handler, status, data, content_type):
    """Answers `handler`'s client with `data`."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
