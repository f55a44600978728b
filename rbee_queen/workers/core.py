"""The worker core, composed in one place: who holds which collaborator.

    registry   live workers, slots, the supervisor's clocks
    starter    start a worker (preflight, spawn, forward, wait for the model)
    relay      stream a request's tokens from a claimed worker
    stopper    drain and stop; signal a process group on its node
    recovery   kill a failed or hung worker and restart it under the policy
    adoption   re-adopt the workers a previous queen left running

Each gets what it uses by constructor; none imports another's module to reach
a third. The queen's services build one `WorkerCore` with `build`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rbee_queen.audit import AuditLog
from rbee_queen.config import QueenConfig
from rbee_queen.nodes.inventory import NodeInventory
from rbee_queen.nodes.lease import NodeLeases
from rbee_queen.workers.access import WorkerAccess
from rbee_queen.workers.adoption import WorkerAdoption
from rbee_queen.workers.recovery import WorkerRecovery
from rbee_queen.workers.registry import Publish, PublishBuilt, WorkerRegistry
from rbee_queen.workers.relay import InferenceRelay
from rbee_queen.workers.restart_policy import RestartPolicy, RestartSettings
from rbee_queen.workers.starter import ModelDir, WorkerStarter
from rbee_queen.workers.states import StateRecorder, TransitionListener
from rbee_queen.workers.stopper import WorkerStopper


@dataclass(frozen=True)
class WorkerCore:
    access: WorkerAccess
    registry: WorkerRegistry
    starter: WorkerStarter
    relay: InferenceRelay
    stopper: WorkerStopper
    recovery: WorkerRecovery
    adoption: WorkerAdoption

    @classmethod
    def build(
        cls,
        config: QueenConfig,
        inventory: NodeInventory,
        *,
        publish: Publish,
        on_transition: TransitionListener,
        audit: AuditLog,
        model_dir: ModelDir,
        check_messages: bool = False,
        leases: NodeLeases | None = None,
        publish_built: PublishBuilt | None = None,
    ) -> WorkerCore:
        access = WorkerAccess(config.home / "worker-tokens.json")
        registry = WorkerRegistry(StateRecorder(on_transition), publish)
        policy = RestartPolicy(restart_settings(config))
        stopper = WorkerStopper(config, inventory, registry, access, registry.states, leases)
        starter = WorkerStarter(config, inventory, registry, access, stopper, policy, model_dir)
        return cls(
            access=access,
            registry=registry,
            starter=starter,
            relay=InferenceRelay(
                inventory, registry, access, publish, audit, check_messages, publish_built
            ),
            stopper=stopper,
            recovery=WorkerRecovery(inventory, registry, starter, stopper, policy, publish),
            adoption=WorkerAdoption(inventory, registry, access),
        )

    def reconfigure(self, config: QueenConfig) -> None:
        """A reload's restart policy: the counts so far stay, the new limits apply
        to the next failure."""
        self.recovery.policy.settings = restart_settings(config)

    async def aclose(self) -> None:
        for live in self.registry.live.values():
            live.drop_streams()
        await self.access.aclose()


def restart_settings(config: QueenConfig) -> RestartSettings:
    return RestartSettings(
        base_delay_s=config.restart_base_delay_s,
        max_delay_s=config.restart_max_delay_s,
        max_attempts=config.restart_max_attempts,
        breaker_failures=config.breaker_failures,
        breaker_window_s=config.breaker_window_s,
        stable_after_s=config.restart_reset_after_s,
    )
