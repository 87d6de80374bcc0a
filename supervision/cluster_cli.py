"""`switchboard cluster [show | drain [ID] | undrain [ID]]`: distributed mode from the
command line, over the HTTP admin API of any instance (the default drain target is the
instance at --url, so `switchboard cluster drain --url http://host:port` drains that one)."""
from __future__ import annotations

import argparse
import json

from . import client
from .config import Config


def cluster(args: argparse.Namespace, config: Config) -> int:
    http = client._client(args, config)       # the same URL and key rules as the other client commands
    view = client._call(http.request, "GET", "/api/cluster")
    if args.action == "show":
        print(json.dumps({k: v for k, v in view.items() if k != "success"}, indent=2))
        return 0
    target = args.instance or view["instance"]
    method = "POST" if args.action == "drain" else "DELETE"
    answer = client._call(http.request, method, f"/api/cluster/members/{target}/drain")
    state = "draining: its companies move to the other members" if answer.get("draining") else "not draining"
    print(f"instance {target} is {state}")
    return 0
