"""Facts about the machine a run is on: board profiles and detection (:mod:`.boards`), CPU, OS and
governor (:mod:`.machine`), the process's memory (:mod:`.memory`), and ``ocrnet-edge doctor`` (:mod:`.doctor`)."""
