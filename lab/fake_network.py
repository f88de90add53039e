"""A minimal Networking (Neutron) endpoint: the lab's one stand-in.

Why not real Neutron: it needs agents (DHCP, L3, OVS/OVN and ML2 plumbing) that are a deployment
of their own, and none of it matters to evacuation with the fake virt driver: servers boot with
``networks="none"``. Nova still calls Neutron even then (evacuate and rebuild list the instance's
ports; nova checks extensions), so something must answer. This answers every collection GET
(``/v2.0/ports``, ``/v2.0/extensions``, ...) with an empty list, ``/`` with a version document, a
single resource with Neutron's 404 body, and anything else with 404. It checks no token.

    python -m lab.fake_network --host 127.0.0.1 --port 15096
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lab-fake-neutron"

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._send(404, {"NeutronError": {"type": "HTTPNotFound", "detail": "",
                                          "message": f"{self.path} not found in the lab"}})

    def do_GET(self) -> None:
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if not parts:
            host = self.headers.get("Host", "")
            self._send(200, {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
                {"rel": "self", "href": f"http://{host}/v2.0/"}]}]})
        elif parts[0] == "v2.0" and len(parts) == 1:
            self._send(200, {"resources": []})
        elif parts[0] == "v2.0" and len(parts) == 2:
            name = parts[1].removesuffix(".json")
            self._send(200, {name.replace("-", "_"): []})
        else:
            self._not_found()

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._not_found()

    do_POST = do_PUT = do_DELETE = _refuse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
