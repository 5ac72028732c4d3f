"""Job arrays through submitit: one array task per shard, on Slurm or as local processes.

Needs submitit (`pip install 'diffsweep[slurm]'`). Each task runs `work_on_shard` and then tries
to finish the run; submitit's own logs go to `<run>/shards/submitit/`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsweep.distribute import finalize, work_on_shard
from diffsweep.errors import ConfigError, ConfigIssue, DiffsweepError
from diffsweep.rundir import SHARDS, RunFolder

try:
    import submitit
except ImportError as missing:  # an optional extra
    raise DiffsweepError("distribute=local|slurm needs submitit: pip install 'diffsweep[slurm]'") from missing

log = logging.getLogger("diffsweep")


def run_shard_task(run_dir: str, shard: int, kind: str) -> str:
    """One array task: its shard, then the run's end if it is the last to finish."""
    from diffsweep.cli import configure_logging

    configure_logging(hydra_logs=False)
    worker = work_on_shard(Path(run_dir), shard, kind=kind)
    finalize(RunFolder(Path(run_dir)))
    return worker.status


class RequeuedShardTask(submitit.helpers.Checkpointable):
    """The same task, put back in the queue by submitit when Slurm times it out or preempts it; the
    requeued task keeps the shard's committed items and makes the rest."""

    def __call__(self, run_dir: str, shard: int, kind: str) -> str:
        return run_shard_task(run_dir, shard, "resume" if self._requeued else kind)

    _requeued = False

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        self._requeued = True
        return super().checkpoint(*args, **kwargs)


@dataclass
class SubmittedArray:
    jobs: list[Any]

    @property
    def job_id(self) -> str:
        ids = [str(job.job_id) for job in self.jobs]
        arrays = {i.split("_", 1)[0] for i in ids}
        return arrays.pop() if len(arrays) == 1 else ",".join(ids)

    def wait(self) -> None:
        for job in self.jobs:
            job.wait()


def submit_shards(run: RunFolder, settings: Mapping[str, Any], shards: list[int], kind: str = "run") -> SubmittedArray:
    """Submit one task per shard in `shards` (all of them, or those a resume must finish)."""
    folder = run.path / SHARDS / "submitit" / "%j"
    task = RequeuedShardTask() if settings.get("requeue_on_timeout") else run_shard_task
    timeout_min, gpus_per_task = int(settings.get("time_min", 240)), int(settings.get("gpus_per_task", 0))
    if settings["backend"] == "local":
        # one submission per task, each seeing its own GPUs: submitit would show every local task the same first ones
        gpus = local_gpus(shards, gpus_per_task, cuda_gpus())
        local = submitit.LocalExecutor(folder=folder)
        local.update_parameters(timeout_min=timeout_min, tasks_per_node=1, nodes=1, gpus_per_node=gpus_per_task)
        jobs = []
        for shard in shards:
            local.update_parameters(visible_gpus=gpus[shard])
            jobs.append(local.submit(task, str(run.path), shard, kind))
        return SubmittedArray(jobs)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(
        name=f"diffsweep-{run.path.parent.name}-{run.path.name}", timeout_min=timeout_min,
        tasks_per_node=1, nodes=1, gpus_per_node=gpus_per_task, cpus_per_task=int(settings.get("cpus_per_task", 1)),
        slurm_partition=settings.get("partition"), slurm_mem=f"{settings['mem_gb']}G" if settings.get("mem_gb") else None,
        slurm_array_parallelism=int(settings.get("array_parallelism", 256)),
        slurm_setup=list(settings.get("setup") or []), slurm_additional_parameters=dict(settings.get("slurm") or {}))
    with executor.batch():
        jobs = [executor.submit(task, str(run.path), shard, kind) for shard in shards]
    return SubmittedArray(jobs)


def cuda_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def local_gpus(shards: list[int], per_task: int, available: int) -> dict[int, tuple[int, ...]]:
    """The GPUs each local task sees: shard k gets the k-th group of `per_task` of the machine's GPUs, wrapping
    round when there are more tasks than groups (those share), so tasks spread over every GPU instead of all
    landing on the first ones, and a resubmitted shard gets the GPUs it had."""
    if per_task and available < per_task:
        raise ConfigError(ConfigIssue("distribute.gpus_per_task", f"{per_task} GPU(s) per task, but this machine has "
                                                                  f"{available} CUDA GPU(s); 0 runs the tasks on the CPU"))
    groups = max(1, available // per_task) if per_task else 1
    return {shard: tuple((shard % groups) * per_task + k for k in range(per_task)) for shard in shards}
