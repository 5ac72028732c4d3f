"""The plan layer: from a validated config to builders, items, batches and shards, and the checks and dry run that
happen before anything is written. It knows nothing of execution."""
