"""The live viewer (``--serve HOST:PORT``): an MJPEG stream of annotated frames and a page of live figures.

Only three paths exist: ``/`` (the page), ``/stream.mjpg`` and ``/stats.json``; anything else is 404,
so no file can be read through it. It binds to 127.0.0.1 unless told otherwise, and binding elsewhere
requires a token that every request carries (``?token=...``). Clients are bounded, and each one is
served from the newest published frame in its own thread: a slow client skips frames and never stalls
the pipeline.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import cv2

from ..errors import InputError, OutputError
from ..results import FrameResult
from ..system.memory import rss_mb
from .draw import annotated
from .frame import Frame

MAX_CLIENTS = 4
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ocrnet-edge live</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee;display:flex;gap:1rem;padding:1rem}
img{max-width:70vw;border:1px solid #444} table{border-collapse:collapse} td{padding:2px 8px}
.bar{background:#333;width:200px;height:10px} .bar div{background:#4c4;height:10px}
</style></head>
<body><img id="stream" alt="annotated stream" src="stream.mjpg__TOKEN__">
<div><h3>ocrnet-edge</h3><table>
<tr><td>frames</td><td id="frames">-</td></tr><tr><td>FPS</td><td id="fps">-</td></tr>
<tr><td>preprocess ms</td><td id="preprocess">-</td></tr><tr><td>invoke ms</td><td id="invoke">-</td></tr>
<tr><td>decode ms</td><td id="decode">-</td></tr><tr><td>dropped</td><td id="dropped">-</td></tr>
<tr><td>memory</td><td><span id="memory">-</span><div class="bar"><div id="membar" style="width:0"></div></div></td></tr>
</table><h4>recent detections</h4><ol id="dets"></ol></div>
<script>
async function tick(){
  try{
    const r = await fetch('stats.json__TOKEN__', {cache:'no-store'}); const s = await r.json();
    for (const k of ['frames','dropped']) document.getElementById(k).textContent = s[k];
    document.getElementById('fps').textContent = s.fps.toFixed(1);
    for (const k of ['preprocess','invoke','decode']) document.getElementById(k).textContent = (s.ms[k]||0).toFixed(2);
    document.getElementById('memory').textContent = s.rss_mb.toFixed(0) + ' / ' + s.budget_mb + ' MB';
    document.getElementById('membar').style.width = Math.min(100, 100*s.rss_mb/s.budget_mb) + '%';
    const ol = document.getElementById('dets'); ol.innerHTML = '';
    for (const d of s.recent) { const li = document.createElement('li'); li.textContent = d; ol.appendChild(li); }
  } catch(e) {}
}
setInterval(tick, 500); tick();
</script></body></html>
"""


class Viewer:
    """The running viewer, a :class:`~.sinks.Sink`: :meth:`write` hands it frames. Use :meth:`start`."""

    def __init__(self, host: str, port: int, token: str | None, budget_mb: float, semantic_overlay: bool = True):
        self.token = token
        self.budget_mb = budget_mb
        self.semantic_overlay = semantic_overlay
        self._frames = 0
        self._first = 0.0
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._clients = 0
        self._stats: dict = {"frames": 0, "fps": 0.0, "ms": {}, "dropped": 0, "rss_mb": 0.0,
                             "budget_mb": budget_mb, "recent": []}
        self._recent: deque[str] = deque(maxlen=10)
        self._closed = False
        viewer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                viewer._handle(self)

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise OutputError(f"cannot serve on {host}:{port} ({e.strerror})") from None
        self.server.daemon_threads = True
        self.address = self.server.server_address
        self._thread = threading.Thread(target=self.server.serve_forever, name="viewer", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, spec: str, token: str | None = None, budget_mb: float = 0, semantic_overlay: bool = True) -> Viewer:
        """Parse ``HOST:PORT`` (or ``:PORT`` / ``PORT``) and start serving."""
        host, _, port = spec.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            port_n = int(port)
        except ValueError:
            raise InputError(f"--serve expects HOST:PORT. Received: {spec!r}") from None
        if host not in LOCAL_HOSTS and not token:
            raise InputError(f"--serve on {host} reaches other machines: give --serve-token TOKEN (every request "
                             "must then carry ?token=TOKEN)")
        return cls(host, port_n, token, budget_mb, semantic_overlay)

    @property
    def url(self) -> str:
        host, port = self.address[:2]
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")

    def write(self, frame: Frame, result: FrameResult) -> None:
        """Offer a new frame and its figures (cheap when nobody watches: nothing is drawn or encoded)."""
        now = time.monotonic()
        self._first = self._first or now
        self._frames += 1
        for d in result.detections:
            self._recent.appendleft(f"{d.label} {d.score:.2f}")
        elapsed = now - self._first
        stats = {"frames": self._frames, "fps": (self._frames - 1) / elapsed if elapsed > 0 else 0.0,
                 "ms": {k: round(v, 3) for k, v in result.times_ms.items()}, "dropped": frame.dropped,
                 "rss_mb": rss_mb(), "budget_mb": self.budget_mb, "recent": list(self._recent), "time": time.time()}
        jpeg = None
        if self._clients:
            img = annotated(frame, result, self.semantic_overlay)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
            jpeg = buf.tobytes() if ok else None
        with self._cond:
            self._stats = stats
            if jpeg is not None:
                self._jpeg = jpeg
                self._seq += 1
            self._cond.notify_all()

    def _authorised(self, req) -> bool:
        if not self.token:
            return True
        q = parse_qs(urlparse(req.path).query)
        given = q.get("token", [""])[0] or req.headers.get("X-Token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _handle(self, req) -> None:
        path = urlparse(req.path).path
        if not self._authorised(req):
            req.send_error(403, "token required")
            return
        suffix = f"?token={self.token}" if self.token else ""
        if path == "/":
            body = PAGE.replace("__TOKEN__", suffix).encode()
            self._send(req, 200, "text/html; charset=utf-8", body)
        elif path == "/stats.json":
            with self._cond:
                body = json.dumps(self._stats).encode()
            self._send(req, 200, "application/json", body)
        elif path == "/stream.mjpg":
            self._stream(req)
        else:
            req.send_error(404)

    @staticmethod
    def _send(req, code: int, ctype: str, body: bytes) -> None:
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        req.wfile.write(body)

    def _stream(self, req) -> None:
        with self._cond:
            if self._clients >= MAX_CLIENTS:
                req.send_error(503, "too many viewers")
                return
            self._clients += 1
        try:
            req.send_response(200)
            req.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            req.send_header("Cache-Control", "no-store")
            req.end_headers()
            seen = -1
            while not self._closed:
                with self._cond:
                    self._cond.wait_for(lambda last=seen: self._seq != last or self._closed, timeout=1.0)
                    if self._closed:
                        break
                    if self._seq == seen or self._jpeg is None:
                        continue
                    jpeg, seen = self._jpeg, self._seq
                req.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            with self._cond:
                self._clients -= 1

    def close(self) -> None:
        """Stop serving."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
