"""A local image server for download tests, run in its own process so that the test process's work (Ray,
img2dataset, the GIL) can never delay an answer: `python -m tests.image_server` prints its port, then serves
until it is terminated.

/ok/N: an image at once; /missing/N: 404 at once; /corrupt/N: junk bytes at once;
/slow/N: an image after SLOW_SECONDS, far beyond any client timeout a test sets.
"""

import io
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

SLOW_SECONDS = 60
COLOURS = [(220, 30, 30), (30, 170, 50), (30, 70, 220), (245, 215, 20)]


def image_bytes(i: int, fmt: str = "JPEG", size: tuple[int, int] = (320, 240)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, COLOURS[i % len(COLOURS)]).save(buffer, format=fmt)
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        kind, index = self.path.strip("/").split("/")
        if kind == "missing":
            self.send_error(404)
            return
        if kind == "slow":
            time.sleep(SLOW_SECONDS)
        body = image_bytes(int(index)) if kind != "corrupt" else b"\xff\xd8\xff\xe0" + b"\x00junk" * 50
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on a slow answer
            pass

    def log_message(self, *args):  # keep test output quiet
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True  # a sleeping /slow/ answer never holds up the exit
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
