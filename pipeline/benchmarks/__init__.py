"""The paper's benchmarks from their own files, scored by their official rules (``scoring``)."""
