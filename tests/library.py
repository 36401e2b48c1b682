"""The client library the transport tests run on, chosen with ``pytest --library``:
``httpx`` (``clientlb``'s transports, the default) or ``httpx2`` (those of
``clientlb.httpx2``). The tests read ``httpx`` and ``clientlb`` from
``tests.transports._support``, so one test body checks either."""

from __future__ import annotations

import importlib
from types import ModuleType

import httpx as _httpx

import clientlb as _clientlb

NAMES = ("httpx", "httpx2")

httpx: ModuleType = _httpx
clientlb: ModuleType = _clientlb


def use(name: str) -> None:
    """Run the transport tests on ``name`` (before they are collected)."""
    global httpx, clientlb
    httpx = importlib.import_module(name)
    clientlb = _clientlb if name == "httpx" else importlib.import_module("clientlb.httpx2")
