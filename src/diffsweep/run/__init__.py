"""The callers of the execution core, each a whole command as plain functions: a sweep in this process (`local`), one
sweep on many processes (`distributed`: torchrun / accelerate ranks and job-array tasks), and `verify`."""
