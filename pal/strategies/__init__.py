"""Query strategies, registered by name; importing this package registers the built-in ones."""

from pal.strategies import (  # noqa: F401  (registration)
    baselines,
    coreset,
    dbal,
    pal,
    typiclust,
    vaal,
)
from pal.strategies.base import (
    STRATEGIES,
    PoolExhaustedError,
    Query,
    QueryContext,
    Strategy,
    build_strategy,
    cpu_bf16_proven,
    label_free_sample,
    label_free_strategies,
    list_strategies,
    register_strategy,
)

__all__ = [
    "STRATEGIES",
    "PoolExhaustedError",
    "Query",
    "QueryContext",
    "Strategy",
    "build_strategy",
    "cpu_bf16_proven",
    "label_free_sample",
    "label_free_strategies",
    "list_strategies",
    "register_strategy",
]
