"""A loopback OTLP/HTTP receiver for tests/all/sinks.rs: decodes real OTLP protobuf
(ExportTraceServiceRequest, ExportMetricsServiceRequest) with PyPI's opentelemetry-proto and
appends one JSON line per request ({"path": ..., "request": <protobuf JSON mapping>}) to a file.

Usage: otlp_receiver.py OUT_FILE [--fail-first N]
Prints "listening PORT" once bound on 127.0.0.1. Answers the first N requests 503 (a collector
that is down), then 200 with the empty Export*ServiceResponse. Stops when its standard input
closes, or after 300 s in any case.
"""

import gzip
import http.server
import json
import sys
import threading

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

MESSAGES = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
}


def main():
    out_path = sys.argv[1]
    fail_first = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--fail-first" else 0
    lock = threading.Lock()
    state = {"seen": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, body=b"", content_type="application/x-protobuf"):
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with lock:
                state["seen"] += 1
                refuse = state["seen"] <= fail_first
            if refuse:
                self.answer(503, b"down", "text/plain")
                return
            kinds = MESSAGES.get(self.path)
            if kinds is None:
                self.answer(404, b"no such path", "text/plain")
                return
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            request = kinds[0]()
            request.ParseFromString(body)
            line = json.dumps(
                {
                    "path": self.path,
                    "content_type": self.headers.get("content-type"),
                    "request": json_format.MessageToDict(request),
                }
            )
            with lock, open(out_path, "a", encoding="utf-8") as out:
                out.write(line + "\n")
            self.answer(200, kinds[1]().SerializeToString())

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    done = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait(300)
    server.shutdown()


if __name__ == "__main__":
    main()
