"""Fault-injection harness: private Postgres clusters and RabbitMQ nodes the tests own outright
(so they may kill them), and a TCP proxy that breaks connections on demand."""

from tests.harness.postgres import PrivatePostgres
from tests.harness.proxy import FaultProxy
from tests.harness.rabbitmq import PrivateRabbit

__all__ = ["FaultProxy", "PrivatePostgres", "PrivateRabbit"]
