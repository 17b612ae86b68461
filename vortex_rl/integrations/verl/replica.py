"""`VortexReplica`: verl's ``RolloutReplica`` for ``rollout.name=vortex``: one ``VortexServer`` Ray actor
per replica, placed on the node (and GPU) of the replica's trainer worker."""

from __future__ import annotations

import ray
from verl.plugin.platform import get_platform
from verl.workers.rollout.replica import RolloutReplica

from vortex_rl.integrations.verl.server import VortexServer


def server_name(replica_rank: int, suffix: str = "", *, reward: bool = False, teacher: bool = False) -> str:
    """The Ray actor name of a replica's server: how the trainer-side adapter finds it."""
    role = "_reward" if reward else "_teacher" if teacher else ""
    return f"vortex_server{role}_{replica_rank}{suffix}"


class VortexReplica(RolloutReplica):
    """A replica of one device (``tensor/data/pipeline_model_parallel_size`` must be 1)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.world_size != 1:
            raise NotImplementedError(
                f"the vortex rollout runs one engine per device: rollout.tensor_model_parallel_size * "
                f"data_parallel_size * pipeline_model_parallel_size = {self.world_size}; set each to 1 "
                "(verl then runs one replica per trainer GPU)")

    async def launch_servers(self) -> None:
        name = server_name(self.replica_rank, self.name_suffix, reward=self.is_reward_model,
                           teacher=self.is_teacher_model)
        options = dict(name=name, max_concurrency=self.max_concurrency, num_cpus=0, num_gpus=0)
        if self.workers:  # hybrid: on the worker's node, seeing the worker's device
            node_id, devices = await self.workers[0].__ray_call__.remote(_node_and_devices)
            platform = get_platform()
            env = {var: "1" for var in platform.ray_noset_envvars()}
            if devices:
                env[platform.visible_devices_envvar()] = ",".join(devices)
            options.update(
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node_id,
                                                                                                  soft=False),
                runtime_env={"env_vars": env})
        server = ray.remote(VortexServer).options(**options).remote(
            config=self.config, model_config=self.model_config, rollout_mode=self.rollout_mode,
            replica_rank=self.replica_rank)
        await server.launch_server.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"vortex://{name}"  # no HTTP endpoint: a unique key for verl's load balancer


def _node_and_devices(worker) -> tuple[str, list[str]]:
    context = ray.get_runtime_context()
    ids = context.get_accelerator_ids()
    devices = next((v for k, v in ids.items() if k in ("GPU", "NPU") and v), [])
    return context.get_node_id(), [str(d) for d in devices]
