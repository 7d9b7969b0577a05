"""``hydra.utils.instantiate`` that surfaces the constructor's own error."""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException


def instantiate(node: Any, **kwargs: Any) -> Any:
    """Like :func:`hydra.utils.instantiate`, but a constructor's exception (e.g. the ValueError
    that names the fix for a bad option) is raised as itself: Hydra would wrap it in an
    InstantiationException whose text is the repr of the original, newlines escaped."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as error:
        if error.__cause__ is not None:
            raise error.__cause__ from None
        raise
