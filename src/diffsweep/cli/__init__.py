"""The command lines: `diffsweep` (the Hydra application and its multirun callbacks) and `diffsweep-runs`. They only
parse, compose and dispatch; the work is in the layers below."""
