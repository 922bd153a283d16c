"""Frame sources, from one string as users type them.

==========================  ===========================================================  ======
source                      what                                                          mode
==========================  ===========================================================  ======
``clip.mp4``                a video file (FFmpeg), read in order, no drops                file
``photo.jpg`` / ``dir/``    an image, or a folder of images in name order                 file
``/dev/video0`` or ``0``    a V4L2 camera                                                 live
``rtsp://`` ``http(s)://``  a network stream (FFmpeg)                                     live
``... ! appsink``           a raw GStreamer pipeline (needs OpenCV built with GStreamer)  live
``csi://N``                 a Jetson CSI camera (``nvarguscamerasrc`` pipeline)           live
``picam://N``               a Raspberry Pi camera through picamera2                       live
``synthetic://``            procedural scenes, deterministic by seed                      live
==========================  ===========================================================  ======

Live sources are read in their own thread that keeps only the newest frame and counts the frames it
dropped; a live source that fails is reopened with backoff while the run goes on. Files are read in
order; ``realtime=True`` paces them like a camera. Frames come out as RGB uint8.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2

from ..errors import EnvironmentMissing, InputError
from .frame import Frame

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".h264", ".ts"}


class Source:
    """Base: iterate for frames; ``close()`` when done."""

    live = False
    description = ""

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    @property
    def dropped(self) -> int:
        """Frames dropped so far."""
        return 0

    @property
    def faults(self) -> dict[str, int]:
        """Counts of faults seen (failed reads, reconnects, empty frames)."""
        return {}

    def close(self) -> None:
        """Release the device or file."""


def gstreamer_available() -> bool:
    """Whether this OpenCV was built with GStreamer (the wheels on PyPI are not)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def picamera2_available() -> bool:
    """Whether picamera2 can be imported."""
    try:
        import picamera2  # noqa: F401
    except ImportError:
        return False
    return True


def csi_pipeline(sensor: int, width: int, height: int, fps: int) -> str:
    """The Jetson CSI camera pipeline (NVMM capture, converted to BGR for OpenCV, newest frame only)."""
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
        f"framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1"
    )


class ImageSource(Source):
    """An image file or a folder of images, in name order."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise InputError(f"{path}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        else:
            self.files = [path]
        self.description = f"{len(self.files)} image(s) from {path}"
        self.unreadable: list[Path] = []

    def __iter__(self) -> Iterator[Frame]:
        for i, p in enumerate(self.files):
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                if len(self.files) == 1:
                    raise InputError(f"{p}: cannot decode this file as an image")
                self.unreadable.append(p)
                continue
            yield Frame(i, time.monotonic(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), name=p.name)

    @property
    def faults(self) -> dict[str, int]:
        return {"unreadable_images": len(self.unreadable)}


class VideoFileSource(Source):
    """A video file read in order, decoded ahead in its own thread (a bounded queue: no drops, bounded
    memory); ``realtime`` paces it at its own frame rate."""

    PREFETCH = 4

    def __init__(self, path: Path, realtime: bool = False):
        self.path, self.realtime = path, realtime
        self.cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            self.cap.release()
            raise InputError(f"{path}: cannot open as a video (not a video, or a codec FFmpeg lacks)")
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 30.0
        self.frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.description = f"video {path} ({self.frames} frames at {self.fps:.1f} fps)"
        self.read_errors = 0
        self._queue: queue.Queue = queue.Queue(maxsize=self.PREFETCH)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _reader(self) -> None:
        i = 0
        try:
            while not self._stop.is_set():
                ok, bgr = self.cap.read()
                if not ok or bgr is None:
                    if self.frames and i < self.frames - 1:
                        self.read_errors += 1  # cut short mid-stream: end cleanly, count it
                    break
                item = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                i += 1
        finally:
            self._queue.put(None)

    def __iter__(self) -> Iterator[Frame]:
        self._thread = threading.Thread(target=self._reader, name="video-reader", daemon=True)
        self._thread.start()
        start = time.monotonic()
        i = 0
        while True:
            rgb = self._queue.get()
            if rgb is None:
                break
            if self.realtime:
                delay = start + i / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield Frame(i, time.monotonic(), rgb)
            i += 1

    @property
    def faults(self) -> dict[str, int]:
        return {"truncated": self.read_errors}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.1)
        self.cap.release()


class LiveSource(Source):
    """A camera or stream read in its own thread that keeps only the newest frame.

    Args:
        opener: Returns a ``read() -> (ok, frame)`` callable and a ``release()`` callable; called again
            to reconnect after failures.
        description: For status lines.
        colour: ``bgr`` (OpenCV captures) or ``rgb`` (picamera2, synthetic).
        max_backoff: Longest wait between reconnection attempts, in seconds.
        fail_after: Consecutive failed reads before reconnecting.
    """

    live = True

    def __init__(self, opener: Callable[[], tuple[Callable, Callable]], description: str, colour: str = "bgr",
                 max_backoff: float = 8.0, fail_after: int = 5, max_frames: int | None = None):
        self.opener, self.description, self.colour = opener, description, colour
        self.max_backoff, self.fail_after, self.max_frames = max_backoff, fail_after, max_frames
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._captured = 0
        self._consumed_index = -1
        self._dropped = 0
        self._faults = {"read_failures": 0, "reconnects": 0, "empty_frames": 0, "size_changes": 0}
        self._stop = threading.Event()
        self._ended = False
        self._error: BaseException | None = None
        read, release = opener()  # the first open fails loudly: a wrong device is the user's error
        self._thread = threading.Thread(target=self._loop, args=(read, release), name="source", daemon=True)
        self._thread.start()

    def _loop(self, read, release) -> None:
        backoff, failures, shape = 0.25, 0, None
        try:
            while not self._stop.is_set():
                if read is None:
                    try:
                        read, release = self.opener()
                        self._faults["reconnects"] += 1
                        backoff, failures = 0.25, 0
                    except Exception:
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, self.max_backoff)
                        continue
                try:
                    ok, img = read()
                except Exception:
                    ok, img = False, None
                if not ok:
                    self._faults["read_failures"] += 1
                    failures += 1
                    if failures >= self.fail_after:
                        release()
                        read = None
                    continue
                failures = 0
                if img is None or img.size == 0 or img.ndim != 3:
                    self._faults["empty_frames"] += 1
                    continue
                if shape is not None and img.shape != shape:
                    self._faults["size_changes"] += 1
                shape = img.shape
                rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if self.colour == "bgr" else img
                with self._cond:
                    if self._latest is not None and self._latest.index > self._consumed_index:
                        self._dropped += 1
                    self._latest = Frame(self._captured, time.monotonic(), rgb, self._dropped)
                    self._captured += 1
                    self._cond.notify_all()
                if self.max_frames is not None and self._captured >= self.max_frames:
                    break
        except BaseException as e:  # surfaced to the consumer
            self._error = e
        finally:
            if read is not None:
                release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                while (self._latest is None or self._latest.index <= self._consumed_index) and not self._ended:
                    self._cond.wait(0.5)
                    if self._stop.is_set():
                        return
                if self._latest is None or self._latest.index <= self._consumed_index:
                    if self._error is not None:
                        raise self._error
                    return
                frame = self._latest
                self._consumed_index = frame.index
            yield frame

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def faults(self) -> dict[str, int]:
        return dict(self._faults)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _capture_opener(target, api: int, what: str):
    def opener():
        cap = cv2.VideoCapture(target, api)
        if not cap.isOpened():
            cap.release()
            raise InputError(f"{what}: cannot open")
        return cap.read, cap.release
    return opener


def _index(spec: str, scheme: str) -> int:
    """The camera number of ``picam://N`` or ``csi://N`` (0 when omitted)."""
    text = spec[len(scheme):] or "0"
    if not text.isdigit():
        raise InputError(f"{spec}: expected {scheme}N with N a camera number (0, 1, ...)")
    return int(text)


def _synthetic(spec: str, default_size: tuple[int, int]) -> LiveSource:
    from .scenes import SceneOptions, draw_scene

    q = parse_qs(urlparse(spec).query)

    def arg(name: str, default: str) -> str:
        return q.get(name, [default])[0]

    try:
        seed = int(arg("seed", "0"))
        fps = float(arg("fps", "0"))
        frames = int(arg("frames", "0")) or None
        w, h = (int(v) for v in arg("size", f"{default_size[0]}x{default_size[1]}").lower().split("x"))
        opts = SceneOptions(width=w, height=h)
    except ValueError as e:
        raise InputError(f"{spec}: expected synthetic://?seed=N&size=WxH&fps=F&frames=N ({e})") from None

    def opener():
        state = {"i": 0, "next": time.monotonic()}

        def read():
            if fps > 0:
                delay = state["next"] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                state["next"] += 1.0 / fps
            img = draw_scene((seed, state["i"]), opts).image
            state["i"] += 1
            return True, img

        return read, lambda: None

    return LiveSource(opener, f"synthetic scenes seed={seed} {w}x{h}" + (f" at {fps:g} fps" if fps else ""),
                      colour="rgb", max_frames=frames)


def _picamera(index: int, size: tuple[int, int]) -> LiveSource:
    if not picamera2_available():
        raise EnvironmentMissing(
            "picam:// needs picamera2 (Raspberry Pi OS: `sudo apt install python3-picamera2`, then create the "
            "virtual environment with --system-site-packages)"
        )

    def opener():
        from picamera2 import Picamera2

        cam = Picamera2(index)
        cam.configure(cam.create_video_configuration(main={"size": size, "format": "RGB888"}))
        cam.start()
        # picamera2's "RGB888" is BGR byte order in memory.
        return (lambda: (True, cam.capture_array())), (lambda: (cam.stop(), cam.close()))

    return LiveSource(opener, f"Raspberry Pi camera {index} (picamera2)", colour="bgr")


def open_source(spec: str, realtime: bool = False, camera_size: tuple[int, int] = (640, 480),
                camera_fps: int = 30) -> Source:
    """Open a source from the string a user typed (see the module table).

    Raises:
        InputError: The file does not exist, is not an image or video, or the device cannot be opened.
        EnvironmentMissing: The source needs something this system lacks (GStreamer, picamera2).
    """
    s = spec.strip()
    if s.startswith("synthetic://"):
        return _synthetic(s, camera_size)
    if s.startswith("picam://"):
        return _picamera(_index(s, "picam://"), camera_size)
    if s.startswith("csi://") or "!" in s:
        sensor = _index(s, "csi://") if s.startswith("csi://") else None  # a malformed spec first, then the system
        if not gstreamer_available():
            raise EnvironmentMissing(
                f"{s}: this OpenCV has no GStreamer (the PyPI wheels never do); use the system OpenCV of JetPack "
                "(python3-opencv) in a virtual environment created with --system-site-packages"
            )
        pipeline = csi_pipeline(sensor, *camera_size, camera_fps) if sensor is not None else s
        return LiveSource(_capture_opener(pipeline, cv2.CAP_GSTREAMER, s), f"GStreamer {s}")
    if s.startswith(("rtsp://", "http://", "https://", "rtmp://", "udp://")):
        return LiveSource(_capture_opener(s, cv2.CAP_FFMPEG, s), f"stream {s}")
    if s.isdigit() or s.startswith("/dev/video"):
        target = int(s) if s.isdigit() else s
        return LiveSource(_capture_opener(target, cv2.CAP_V4L2, s), f"V4L2 camera {s}")
    path = Path(s)
    if not path.exists():
        raise InputError(f"{s}: no such file, folder or camera (sources: a video or image file, a folder, "
                         "/dev/videoN, rtsp://, http(s)://, csi://N, picam://N, synthetic://)")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path)
    return VideoFileSource(path, realtime)
