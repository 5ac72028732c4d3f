"""The execution core: loaded pipelines and their calls, the pipeline cache, and the one attempt loop that runs
batches into a run folder."""
