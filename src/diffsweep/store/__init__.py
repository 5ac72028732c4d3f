"""The run folder on disk: each record declared once (`records`), one reader and one writer per file (`folder`,
`runconfig`), atomic writes, and the writer thread that commits items."""
