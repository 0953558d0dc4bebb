"""Storage patterns of AI jobs, simulated on one machine: object storage and checkpoints.

* **Parallel ranged reads from object storage.** :class:`LatencyServer` serves files over
  HTTP on ``127.0.0.1`` with an injected first-byte latency and a per-connection bandwidth
  cap, a *simulation* of S3 (whose first byte takes about 100-200 ms and whose connections
  each carry about 85-90 MB/s, see ``labkit/data/storage.json``). :func:`ranged_get` reads an
  object with ``concurrency`` parallel byte-range GETs, the way Mountpoint for S3 and the AWS
  SDKs' transfer managers do.
* **Checkpoints: local first, upload in the background.** :func:`simulate_training` runs
  fake training steps that save a checkpoint every few steps, and either uploads it inline
  (the step waits) or hands it to a :class:`BackgroundUploader` (the step goes on);
  :func:`throttled_copy` stands in for the slow remote store.

Everything binds to loopback only, writes only where it is told, and stops its threads when
its ``with`` block ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import http.client
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from labkit.storage.measures import MiB, Throughput
from labkit.storage.pagecache import aligned_buffer

__all__ = ["LatencyServer", "ranged_get", "throttled_copy", "BackgroundUploader",
           "simulate_training"]

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 256 * 1024


def _paced_send(write: Callable[[bytes], object], f, nbytes: int, MBps: float | None) -> None:
    """Copy ``nbytes`` from ``f`` to ``write`` in chunks, no faster than ``MBps`` (if given)."""
    t0 = time.perf_counter()
    sent = 0
    while sent < nbytes:
        chunk = f.read(min(_CHUNK, nbytes - sent))
        if not chunk:
            break
        if MBps:  # hold each chunk back until the paced time of its last byte
            ahead = (sent + len(chunk)) / (MBps * 1e6) - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
        write(chunk)
        sent += len(chunk)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients reuse connections

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv: LatencyServer = self.server.owner  # type: ignore[attr-defined]
        path = srv.files.get(self.path.lstrip("/"))
        if path is None:
            self.send_error(404, "no such object")
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            first = int(m.group(1)) if m else size
            last = int(m.group(2)) if m and m.group(2) else size - 1
            if not m or first >= size or last < first:  # RFC 9110: unsatisfiable -> 416
                self.send_response(416, "Range Not Satisfiable")
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = first, min(last, size - 1)
            status = 206
        srv._count()
        time.sleep(srv.first_byte_ms / 1000.0)  # the injected first-byte latency
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            _paced_send(self.wfile.write, f, end - start + 1, srv.connection_MBps)

    def log_message(self, format, *args) -> None:  # noqa: A002 (quiet in notebooks)
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops parallel connects (1 s SYN retry)


class LatencyServer:
    """A local HTTP object server with injected latency (a *simulation* of object storage).

    Serves the given files (by their names) on ``127.0.0.1`` at a free port; each request
    waits ``first_byte_ms`` before the first byte, and each response is paced to at most
    ``connection_MBps``. Supports ``Range: bytes=a-b``. Use it as a context manager; the
    server and its threads stop when the block ends::

        with LatencyServer([path], first_byte_ms=20, connection_MBps=50) as srv:
            ranged_get(srv.url(path.name), size, concurrency=8)
    """

    def __init__(self, files, *, first_byte_ms: float = 20.0,
                 connection_MBps: float | None = 50.0):
        if first_byte_ms < 0 or (connection_MBps is not None and connection_MBps <= 0):
            raise ValueError("first_byte_ms must be >= 0 and connection_MBps > 0 (or None)")
        self.files = {Path(p).name: Path(p) for p in files}
        missing = [str(p) for p in self.files.values() if not p.is_file()]
        if missing:
            raise ValueError(f"not files: {missing}")
        self.first_byte_ms = float(first_byte_ms)
        self.connection_MBps = connection_MBps
        self.requests = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running; use it in a `with` block")
        return self._httpd.server_address[1]

    def url(self, name: str) -> str:
        """``http://127.0.0.1:PORT/name`` for a served file."""
        if name not in self.files:
            raise ValueError(f"{name!r} is not served; served: {sorted(self.files)}")
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> "LatencyServer":
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="labkit-latency-server")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None


def ranged_get(url: str, size: int, *, part_bytes: int = 4 * MiB, concurrency: int = 4,
               timeout: float = 60.0) -> Throughput:
    """Download ``size`` bytes from ``url`` with parallel byte-range GETs; time it.

    Splits the object into ``part_bytes`` ranges and fetches them over ``concurrency``
    keep-alive connections (one thread each) into one buffer. ``ops`` is the number of GET
    requests. Raises RuntimeError on an HTTP error or a short read.
    """
    if size <= 0 or part_bytes <= 0 or concurrency < 1:
        raise ValueError("need size > 0, part_bytes > 0 and concurrency >= 1")
    m = re.match(r"^http://([^/:]+):(\d+)(/.*)$", url)
    if not m:
        raise ValueError(f"expected http://host:port/path, got {url!r}")
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    parts: queue.Queue = queue.Queue()
    for off in range(0, size, part_bytes):
        parts.put((off, min(part_bytes, size - off)))
    n_parts = parts.qsize()
    buf = aligned_buffer(size)
    view = memoryview(buf)
    done = [0] * concurrency
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            while not errors:
                try:
                    off, n = parts.get_nowait()
                except queue.Empty:
                    return
                conn.request("GET", path, headers={"Range": f"bytes={off}-{off + n - 1}"})
                resp = conn.getresponse()
                if resp.status != 206:
                    raise RuntimeError(f"GET {url} range {off}: HTTP {resp.status}")
                got = 0
                while got < n:
                    k = resp.readinto(view[off + got: off + n])
                    if not k:
                        break
                    got += k
                resp.read()  # drain, keeps the connection reusable
                if got != n:
                    raise RuntimeError(f"short read at {off}: {got} of {n} bytes")
                done[i] += got
        except BaseException as err:  # reported to the caller
            errors.append(err)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(min(concurrency, n_parts))]
    t0 = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
    finally:
        view.release()
        buf.close()
    if errors:
        raise RuntimeError(f"ranged GET failed: {errors[0]}") from errors[0]
    return Throughput(sum(done), seconds, n_parts,
                      label=f"{n_parts} ranged GETs, {len(threads)} connection(s)")


def throttled_copy(src: str | os.PathLike, dst: str | os.PathLike, MBps: float) -> Throughput:
    """Copy ``src`` to ``dst`` no faster than ``MBps``: a stand-in for uploading to a slow
    remote store (the copy lands on this disk, inside the caller's scratch folder)."""
    if MBps <= 0:
        raise ValueError("MBps must be > 0")
    size = os.path.getsize(src)
    t0 = time.perf_counter()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        _paced_send(fout.write, fin, size, MBps)
    return Throughput(size, time.perf_counter() - t0, 1, label="upload (simulated)")


class BackgroundUploader:
    """Uploads files on a background thread (with :func:`throttled_copy`), so training goes on.

    ``submit(path)`` queues a file and returns at once, unless ``max_pending`` uploads are
    already queued or running: then it waits for the oldest to finish (back-pressure, as
    ``torch.distributed.checkpoint.async_save`` users wait on the previous save's future)
    and adds that wait to ``waited_seconds``. Without that limit, checkpoints written faster
    than they upload pile up on the local disk without bound. ``wait()`` blocks until the
    queue is empty and returns the uploads so far. Leaving the ``with`` block waits for
    pending uploads on success and cancels them on an error or Ctrl-C; either way the thread
    is joined.
    """

    def __init__(self, dest: str | os.PathLike, MBps: float, *, max_pending: int | None = 1):
        if MBps <= 0:
            raise ValueError("MBps must be > 0")
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be >= 1 (or None for no limit)")
        self.dest = Path(dest)
        self.MBps = MBps
        self.max_pending = max_pending
        self.uploads: list[Throughput] = []
        self.errors: list[BaseException] = []
        self.waited_seconds = 0.0
        self.most_pending = 0
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._cond = threading.Condition()

    def _run(self) -> None:
        while True:
            path = self._q.get()
            try:
                if path is None:
                    return
                self.uploads.append(throttled_copy(path, self.dest / Path(path).name,
                                                   self.MBps))
            except BaseException as err:  # reported by wait()
                self.errors.append(err)
            finally:
                if path is not None:
                    with self._cond:
                        self._pending -= 1
                        self._cond.notify_all()
                self._q.task_done()

    def __enter__(self) -> "BackgroundUploader":
        self.dest.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, daemon=True, name="labkit-uploader")
        self._thread.start()
        return self

    @property
    def pending(self) -> int:
        """Uploads queued or running now."""
        return self._pending

    def submit(self, path: str | os.PathLike) -> float:
        """Queue ``path`` for upload; returns the seconds it waited for room (0.0 when an
        upload slot was free)."""
        if self._thread is None:
            raise RuntimeError("use BackgroundUploader in a `with` block")
        t0 = time.perf_counter()
        with self._cond:
            while self.max_pending is not None and self._pending >= self.max_pending:
                self._cond.wait()
            waited = time.perf_counter() - t0
            self._pending += 1
            self.most_pending = max(self.most_pending, self._pending)
        self.waited_seconds += waited
        self._q.put(Path(path))
        return waited

    def wait(self) -> list[Throughput]:
        """Block until every queued upload is done; raise RuntimeError if one failed."""
        self._q.join()
        if self.errors:
            raise RuntimeError(f"upload failed: {self.errors[0]!r}") from self.errors[0]
        return list(self.uploads)

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:  # cancel what has not started
            try:
                while True:
                    self._q.get_nowait()
                    self._q.task_done()
                    with self._cond:
                        self._pending -= 1
                        self._cond.notify_all()
            except queue.Empty:
                pass
        self._q.put(None)
        if self._thread is not None:
            self._thread.join()
        self._thread = None


def simulate_training(save: Callable[[int], Path], *, steps: int = 12, step_s: float = 0.05,
                      every: int = 4, upload: Callable[[Path], object] | None = None,
                      uploader: BackgroundUploader | None = None) -> dict:
    """Fake training: ``steps`` steps of ``step_s`` seconds (sleep: the accelerator is busy),
    with ``save(step) -> path`` every ``every`` steps, then the upload.

    With ``upload`` the step waits for it (synchronous); with ``uploader`` the file is handed
    over and the loop continues (asynchronous), unless the uploader is full, in which case
    the step waits for room (back-pressure); with neither, only the local save.

    Returns a dict of seconds: ``step_seconds`` (each step), ``save_seconds`` (the local
    saves), ``upload_wait_seconds`` (steps blocked on an upload: the whole upload inline, the
    back-pressure wait in the background), ``stall_seconds`` (all time the steps spent
    beyond ``steps x step_s``: saves plus upload waits), ``drain_seconds`` (after the last
    step, waiting for the uploads still in flight: the job cannot end, nor count its last
    checkpoint as safe, before they finish; 0 without an uploader) and ``total_seconds``
    (the run, drain included).
    """
    if steps < 1 or every < 1 or step_s < 0:
        raise ValueError("need steps >= 1, every >= 1 and step_s >= 0")
    if upload is not None and uploader is not None:
        raise ValueError("pass upload (synchronous) or uploader (background), not both")
    times, saves, waits = [], [], []
    t_start = time.perf_counter()
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        time.sleep(step_s)
        if step % every == 0:
            t_save = time.perf_counter()
            path = save(step)
            t_up = time.perf_counter()
            saves.append(t_up - t_save)
            if upload is not None:
                upload(path)
                waits.append(time.perf_counter() - t_up)
            elif uploader is not None:
                waits.append(uploader.submit(path))
        times.append(time.perf_counter() - t0)
    t_loop = time.perf_counter()
    if uploader is not None:
        uploader.wait()
    t_end = time.perf_counter()
    return {"step_seconds": times, "save_seconds": sum(saves),
            "upload_wait_seconds": sum(waits),
            "stall_seconds": max(0.0, sum(times) - steps * step_s),
            "drain_seconds": t_end - t_loop if uploader is not None else 0.0,
            "total_seconds": t_end - t_start}
