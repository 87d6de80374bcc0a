"""`switchboard webhooks dead|replay`: the webhook dead letters of a running server (admin key).

    switchboard webhooks dead [--company ID] [--limit N]
    switchboard webhooks replay [--company ID] [--id ID ...]     # no --id and no --company: all of them
"""
from __future__ import annotations

import argparse

from switchboard.actors.phone import validate_company_id

from .client import _call, _client, _print
from .config import Config


def add_parser(commands, parents) -> argparse.ArgumentParser:
    p = commands.add_parser("webhooks", parents=parents, help="list or replay webhook dead letters (admin key)")
    p.add_argument("action", choices=("dead", "replay"))
    p.add_argument("--company", help="only this company's")
    p.add_argument("--limit", type=int, default=100, help="dead: at most this many (default 100)")
    p.add_argument("--id", action="append", dest="ids", help="replay: this dead letter (repeatable)")
    return p


def webhooks(args: argparse.Namespace, config: Config) -> int:
    client = _client(args, config)
    company = validate_company_id(args.company) if args.company else None
    if args.action == "dead":
        answer = _call(client.request, "GET", "/api/webhooks/dead", query={"limit": args.limit, "company": company})
        rows = answer.get("deadLetters", [])
        if not rows:
            print("no dead letters")
            return 0
        print(f"{'ID':<32}  {'SEQ':>8}  {'COMPANY':<20} {'EVENT':<15} {'ATTEMPTS':>8}  ERROR")
        for r in rows:
            print(f"{r['id']:<32}  {r['seq']:>8}  {str(r.get('companyId') or '-'):<20} {r['event']:<15} "
                  f"{r.get('attempts', 0):>8}  {r.get('error')}")
        print(f"{answer.get('count')} shown of {answer.get('total')}")
        return 0
    body = {**({"ids": args.ids} if args.ids else {}), **({"companyId": company} if company else {})}
    _print(_call(client.request, "POST", "/api/webhooks/dead/replay", body))
    return 0
