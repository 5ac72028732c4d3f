"""Job arrays through submitit: one array task per shard, on Slurm or as local processes.

Needs submitit (`pip install 'diffsweep[slurm]'`). Each task runs the task function it is given (a worker at its
shard, `diffsweep.run.distributed.run_shard_task`); submitit's own logs go to `<run>/shards/submitit/`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffsweep.config.model import DistributeSettings
from diffsweep.errors import ConfigError, ConfigIssue, DiffsweepError
from diffsweep.store.folder import SHARDS, RunFolder

try:
    import submitit
except ImportError as missing:  # an optional extra
    raise DiffsweepError("distribute=local|slurm needs submitit: pip install 'diffsweep[slurm]'") from missing

log = logging.getLogger("diffsweep")


ShardTask = Callable[[str, int, str, bool], str]  # (run folder, shard, "run" | "resume", trust) -> worker status


class RequeuedShardTask(submitit.helpers.Checkpointable):
    """A shard task that submitit puts back in the queue when Slurm times it out or preempts it; the requeued task
    keeps the shard's committed items and makes the rest."""

    def __init__(self, task: ShardTask) -> None:
        self.task = task
        self._requeued = False

    def __call__(self, run_dir: str, shard: int, kind: str, trust: bool) -> str:
        return self.task(run_dir, shard, "resume" if self._requeued else kind, trust)

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


def submit_shards(run: RunFolder, settings: DistributeSettings, shards: list[int], task: ShardTask,
                  kind: str = "run", trust: bool = False) -> SubmittedArray:
    """Submit one `task` per shard in `shards` (all of them, or those a resume must finish)."""
    check_backend_available(settings)
    folder = run.path / SHARDS / "submitit" / "%j"
    if settings.requeue_on_timeout:
        task = RequeuedShardTask(task)
    timeout_min, gpus_per_task = settings.time_min or 240, settings.gpus_per_task
    if settings.backend == "local":
        # one submission per task, each seeing its own GPUs: submitit would show every local task the same first ones
        gpus = local_gpus(shards, gpus_per_task, cuda_gpus())
        local = submitit.LocalExecutor(folder=folder)
        local.update_parameters(timeout_min=timeout_min, tasks_per_node=1, nodes=1, gpus_per_node=gpus_per_task)
        jobs = []
        for shard in shards:
            local.update_parameters(visible_gpus=gpus[shard])
            jobs.append(local.submit(task, str(run.path), shard, kind, trust))
        return SubmittedArray(jobs)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(
        name=f"diffsweep-{run.path.parent.name}-{run.path.name}", timeout_min=timeout_min,
        tasks_per_node=1, nodes=1, gpus_per_node=gpus_per_task, cpus_per_task=settings.cpus_per_task or 1,
        slurm_partition=settings.partition, slurm_mem=f"{settings.mem_gb}G" if settings.mem_gb else None,
        slurm_array_parallelism=settings.array_parallelism or 256, slurm_setup=list(settings.setup),
        slurm_additional_parameters=dict(settings.slurm))
    with executor.batch():
        jobs = [executor.submit(task, str(run.path), shard, kind, trust) for shard in shards]
    return SubmittedArray(jobs)


def check_backend_available(settings: DistributeSettings) -> None:
    """Refuse a job array this machine cannot submit, before a run folder is made for it: Slurm needs `sbatch`."""
    if settings.backend == "local":  # GPUs the tasks cannot have
        local_gpus(list(range(settings.tasks)), settings.gpus_per_task, cuda_gpus())
    elif settings.backend == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(ConfigIssue("distribute", "distribute=slurm submits with Slurm's `sbatch`, which is not on "
                                                    "PATH here: submit from a Slurm login node, or run the shards as "
                                                    "local processes (distribute=local) or under torchrun"))


def cuda_gpus() -> int:
    import torch  # noqa: PLC0415 - start-up time: torch only when local tasks are given GPUs

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
