"""Assembling and running a job: the step loop, building a local or Ray run, the run directory,
checkpoints and resume, tracking (metrics.jsonl, W&B, console) and plots."""
