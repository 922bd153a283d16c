"""Inputs and outputs of a run: frames (:mod:`.frame`), where they come from (:mod:`.sources`, with the
generated scenes of :mod:`.scenes`), where results go (:mod:`.sinks`, the browser :mod:`.viewer`), and what
those write (:mod:`.draw` for annotated frames, :mod:`.rle` for COCO masks)."""
