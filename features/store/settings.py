"""What the store code needs from the run config's `store` section (`jobs.config.StoreConfig`).

`features` must not import `jobs`, so the store functions accept anything with these attributes.

Example:
    >>> from jobs.config import StoreConfig
    >>> isinstance(StoreConfig(), StoreSettings)
    True
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class StoreSettings(Protocol):
    project: str
    ttl_days: int
    offline_store: dict[str, Any]
    online_store: dict[str, Any]
    windows_days: list[int]
