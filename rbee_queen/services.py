"""The queen's long-lived parts, built once in the lifespan and shared by routes."""

from __future__ import annotations

from dataclasses import dataclass

from peewee import SqliteDatabase
from starlette.requests import Request

from rbee_queen.config import QueenConfig
from rbee_queen.fleet.known_hosts import HostKeyStore
from rbee_queen.fleet.pool import SessionPool
from rbee_queen.orchestration.nodes import NodeInventory
from rbee_queen.orchestration.workers import WorkerManager
from rbee_queen.store.db import open_database


@dataclass
class Services:
    config: QueenConfig
    db: SqliteDatabase
    pool: SessionPool
    inventory: NodeInventory
    workers: WorkerManager

    @classmethod
    def build(cls, config: QueenConfig) -> Services:
        config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = open_database(config.db_path)
        pool = SessionPool(HostKeyStore(config.known_hosts_path), config.ssh_connect_timeout_s)
        inventory = NodeInventory(pool)
        return cls(config, db, pool, inventory, WorkerManager(config, pool, inventory))

    async def aclose(self) -> None:
        if self.config.stop_workers_on_exit:
            await self.workers.stop_all()
        await self.workers.aclose()
        await self.pool.close_all()
        self.db.close()


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
