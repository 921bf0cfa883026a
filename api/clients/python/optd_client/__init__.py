"""optd_client: a Python client for the optd HTTP API (standard library only).

    from optd_client import Client
    c = Client("http://127.0.0.1:8080")
    c.create("exp-1", "adam", params=[0.5, -1.25], hyperparameters={"lr": 0.01})
    r = c.step("exp-1", [0.1, -0.2], expect_step=0)
    print(r.step, r.params)
"""
from .client import (
    Client,
    Contribution,
    OptdError,
    OptdConnectionError,
    OptdTimeout,
    StepResult,
    UNSET,
    Worker,
    list_across,
)
from .table import ShardedTable, shard_rows

__all__ = [
    "Client",
    "Contribution",
    "OptdError",
    "OptdConnectionError",
    "OptdTimeout",
    "StepResult",
    "UNSET",
    "Worker",
    "list_across",
    "ShardedTable",
    "shard_rows",
]
__version__ = "1.1.0"
