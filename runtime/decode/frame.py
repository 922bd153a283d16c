"""Decoding of the fused model's outputs into a :class:`~runtime.results.FrameResult`.

:func:`decode_outputs` joins the per-task decoders. For a model with instance masks, a detection's score is
its class probability times its mask's confidence (:func:`~.instance.mask_confidence`); the score threshold and
NMS act on the class probability, before the masks are assembled.
The evaluator of the workstation side calls this same function, so evaluating a ``.tflite``
measures exactly what the device runs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import contract
from ..preprocess import Transform
from ..quant import FLOAT, Quant
from ..results import Detection, FrameResult
from .detect import DecodeOptions, decode_detections
from .instance import assemble_masks, mask_confidence
from .semantic import semantic_argmax

SEG_LABELS = "seg_labels"
"""Role of a class-id map computed inside the graph."""


def decode_outputs(
    outputs: Mapping[str, np.ndarray],
    transform: Transform,
    class_names: tuple[str, ...] = contract.THING_CLASSES,
    options: DecodeOptions = DecodeOptions(),
    quants: Mapping[str, Quant] | None = None,
    strides: tuple[int, ...] = contract.DEFAULT_STRIDES,
    seg_stride: float = contract.SEG_STRIDE,
    copy: bool = True,
) -> FrameResult:
    """Decode whatever heads the outputs hold.

    Args:
        outputs: Output name to array (batch of 1), raw quantized or float.
        transform: Input-to-frame transform of the frame.
        class_names: Thing classes in id order.
        options: Detection thresholds and caps.
        quants: Output name to its quantization; missing names are float.
        strides: Detection strides.
        seg_stride: Stride of the semantic logits and mask prototypes.
        copy: Copy the semantic logits kept for on-demand resampling (the interpreter reuses its
            output buffers on the next invoke).

    Returns:
        The frame's result; maps at frame resolution are computed only when asked for.
    """
    q = dict(quants or {})
    size = transform.input_size
    dets: tuple[Detection, ...] = ()
    if contract.DET_SCORES in outputs:
        raw = decode_detections(
            outputs[contract.DET_SCORES], outputs[contract.DET_BOXES], size, options,
            q.get(contract.DET_SCORES, FLOAT), q.get(contract.DET_BOXES, FLOAT), strides,
        )
        masks = None
        scores = raw.scores
        order = range(len(raw))
        if contract.DET_COEFFS in outputs and contract.MASK_PROTOS in outputs:
            masks = assemble_masks(
                outputs[contract.DET_COEFFS], outputs[contract.MASK_PROTOS], raw.locations, raw.boxes, seg_stride,
                q.get(contract.DET_COEFFS, FLOAT), q.get(contract.MASK_PROTOS, FLOAT),
            )
            scores = raw.scores * mask_confidence(masks, raw.boxes, seg_stride)
            order = np.argsort(-scores, kind="stable").tolist()  # best first, by the score reported
        frame_boxes = transform.boxes_to_frame(raw.boxes).tolist()
        classes, class_scores, scores = raw.classes.tolist(), raw.scores.tolist(), scores.tolist()
        dets = tuple(
            Detection(
                category=classes[i], label=class_names[classes[i]], score=scores[i], box=tuple(frame_boxes[i]),
                class_score=class_scores[i],
                _mask_logits=None if masks is None else masks[i], _transform=transform, _stride=seg_stride,
            )
            for i in order
            if frame_boxes[i][2] > frame_boxes[i][0] and frame_boxes[i][3] > frame_boxes[i][1]
            # a box wholly inside the letterbox bars is not in the frame
        )
    semantic = logits = None
    is_labels = False
    map_stride: float = seg_stride
    if contract.SEG_LOGITS in outputs:
        logits = outputs[contract.SEG_LOGITS]
        semantic = semantic_argmax(logits)
        if copy:
            logits = np.array(logits)
    elif SEG_LABELS in outputs:  # argmax inside the graph (models from elsewhere, e.g. DeepLab)
        logits = np.array(outputs[SEG_LABELS]).reshape(outputs[SEG_LABELS].shape[-2:])
        semantic = logits.astype(np.uint8)
        is_labels = True
        map_stride = contract.input_wh(size)[1] / semantic.shape[0]
    return FrameResult(
        detections=dets, semantic=semantic, transform=transform,
        _seg_logits=logits, _seg_quant=q.get(contract.SEG_LOGITS, FLOAT), _seg_stride=map_stride,
        _seg_is_labels=is_labels,
    )

