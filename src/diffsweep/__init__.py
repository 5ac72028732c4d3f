"""diffsweep: declarative batch sweeps for Hugging Face diffusers pipelines.

YAML says what to generate (a builder and a grid); diffsweep loads each distinct pipeline once,
batches the grid, and writes every output with its provenance into a versioned run folder.
"""

__version__ = "0.1.0"
