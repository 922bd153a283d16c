"""Workstation side: turn a trained model into the one file a board runs.

Steps are plain functions, orchestrated by ``ocrnet-edge convert``: calibration images
(:mod:`.calibration`), full-int8 export with fused heads (:mod:`.export`), the graph audit and Edge TPU
readiness (:mod:`.checks`), the fidelity gate (:mod:`.fidelity`), the Edge TPU compiler
(:mod:`.edgetpu`) and the model card (:mod:`.card`).
"""
