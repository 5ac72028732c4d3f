"""Example code for users of diffsweep: `custom_pipeline` is a minimal `DiffusionPipeline` subclass that the
`custom` provider loads by dotted path (preset `tiny_custom`) or from a model folder's `pipeline.py`."""
