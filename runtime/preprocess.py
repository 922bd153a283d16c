"""Frame preprocessing: letterbox or stretch into the model's input, and the way back.

The same function prepares calibration images on the workstation and camera frames on the device,
so both see the same pixels. It writes into a caller-owned buffer (the interpreter's input tensor
on the device), so a steady stream allocates nothing per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .contract import InputSize, input_size, input_wh

PAD_VALUE = 114
"""Grey of the letterbox bars (the value most detectors' preprocessing uses)."""

RESIZE_MODES = ("letterbox", "stretch")
COLOUR_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class Transform:
    """Maps model-input pixels back to frame pixels: ``frame = (input - pad) / scale``.

    Attributes:
        scale_x: Input pixels per frame pixel, horizontally.
        scale_y: Input pixels per frame pixel, vertically.
        pad_x: Left padding in input pixels.
        pad_y: Top padding in input pixels.
        frame_w: Frame width in pixels.
        frame_h: Frame height in pixels.
        input_size: Model input size: a side, or ``(width, height)``.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    frame_w: int
    frame_h: int
    input_size: InputSize

    def boxes_to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """(D, 4) x0, y0, x1, y1 in input pixels to frame pixels, clipped to the frame."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0, self.frame_w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_h, out=out[:, 1::2])
        return out

    def frame_to_grid(self, stride: float) -> np.ndarray:
        """2x3 affine from frame pixel centres to cell coordinates of a map at ``stride``.

        A map at ``stride`` has cell ``(u, v)`` centred on input pixel ``((u + 0.5) * stride, ...)``;
        this is the matrix ``cv2.warpAffine(..., flags=WARP_INVERSE_MAP)`` needs to sample it per
        frame pixel.
        """
        sx, sy = self.scale_x / stride, self.scale_y / stride
        return np.array(
            [
                [sx, 0.0, (0.5 * self.scale_x + self.pad_x) / stride - 0.5],
                [0.0, sy, (0.5 * self.scale_y + self.pad_y) / stride - 0.5],
            ],
            dtype=np.float64,
        )


def plan(frame_w: int, frame_h: int, size: InputSize, mode: str = "letterbox") -> Transform:
    """The transform that :func:`preprocess_into` applies to a ``frame_w`` x ``frame_h`` frame for an
    input of ``size`` (a side, or ``(width, height)``)."""
    iw, ih = input_wh(size)
    if mode == "letterbox":
        s = min(iw / frame_w, ih / frame_h)
        nw, nh = max(1, round(frame_w * s)), max(1, round(frame_h * s))
        return Transform(nw / frame_w, nh / frame_h, (iw - nw) // 2, (ih - nh) // 2, frame_w, frame_h, size)
    if mode == "stretch":
        return Transform(iw / frame_w, ih / frame_h, 0, 0, frame_w, frame_h, size)
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}. Received: {mode!r}")


def preprocess_into(
    frame: np.ndarray,
    out: np.ndarray,
    mode: str = "letterbox",
    frame_order: str = "rgb",
    model_order: str = "rgb",
) -> Transform:
    """Resize ``frame`` into ``out`` (the model input) and return the transform back.

    Args:
        frame: (H, W, 3) uint8 image in ``frame_order``.
        out: (H, W, 3) or (1, H, W, 3) buffer to fill (uint8 or float32); written in place; its shape
            is the model input size.
        mode: ``letterbox`` (keep aspect, grey bars) or ``stretch``.
        frame_order: Channel order of ``frame`` (``rgb``; OpenCV captures give ``bgr``).
        model_order: Channel order the model expects.

    Returns:
        The :class:`Transform` from input pixels to frame pixels.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"Expected an (H, W, 3) uint8 frame. Received: shape={frame.shape}, dtype={frame.dtype}")
    dst = out[0] if out.ndim == 4 else out
    ih, iw = dst.shape[:2]
    h, w = frame.shape[:2]
    t = plan(w, h, input_size(iw, ih), mode)
    nw, nh = round(w * t.scale_x), round(h * t.scale_y)
    px, py = int(t.pad_x), int(t.pad_y)
    region = dst[py : py + nh, px : px + nw]
    interp = cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR
    if dst.dtype == np.uint8 and (nw, nh) != (w, h):
        cv2.resize(frame, (nw, nh), dst=region, interpolation=interp)
    else:
        region[...] = frame if (nw, nh) == (w, h) else cv2.resize(frame, (nw, nh), interpolation=interp)
    if frame_order != model_order:
        region[...] = region[..., ::-1]
    if mode == "letterbox" and (nw, nh) != (iw, ih):
        dst[:py] = PAD_VALUE
        dst[py + nh :] = PAD_VALUE
        dst[py : py + nh, :px] = PAD_VALUE
        dst[py : py + nh, px + nw :] = PAD_VALUE
    return t
