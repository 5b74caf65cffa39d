"""Tasks for the CloudChainManager tests (the original package's examples)."""

from __future__ import annotations
