"""Placement: which live instance should own each company, and what one instance does about it.

Weighted rendezvous hashing (highest random weight): every company ranks every member by
a hash of (company, member) scaled by the member's capacity, and the top one should own
it. A member joining or leaving moves only the companies that rank it first, about a
1/N share, and every instance computes the same answer from the same member list,
without talking to the others.

`plan()` is pure: from what this instance runs, who holds each lease and the live
members, it says what to take up, what to hand over (at most `max_moves` a round, so a
join moves companies gently) and which local actors must go because another instance
holds their lease.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Callable, Iterable, Mapping


@dataclasses.dataclass(frozen=True)
class Member:
    id: str
    url: str
    capacity: int = 1000
    draining: bool = False


def _unit(company_id: str, member_id: str) -> float:
    """A uniform number in (0, 1) for the pair, the same on every instance and run."""
    digest = hashlib.blake2b(f"{company_id}\x00{member_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2 ** 64 + 2)


def owner_for(company_id: str, members: Iterable[Member]) -> Member | None:
    """The member that should own the company: the highest capacity-weighted score
    among members that are not draining (None when there is none)."""
    best, best_score = None, -math.inf
    for member in members:
        if member.draining or member.capacity <= 0:
            continue
        score = -member.capacity / math.log(_unit(company_id, member.id))
        if score > best_score or (score == best_score and best is not None and member.id < best.id):
            best, best_score = member, score
    return best


@dataclasses.dataclass
class Plan:
    take: list[str] = dataclasses.field(default_factory=list)       # start an actor here (lease free or ours)
    hand_over: list[str] = dataclasses.field(default_factory=list)  # stop ours; its new owner takes it up
    evict: list[str] = dataclasses.field(default_factory=list)      # another instance holds it: stop ours
    assigned: dict[str, str] = dataclasses.field(default_factory=dict)   # company -> member id


def plan(me: str, companies: Iterable[str], local: Iterable[str], holders: Mapping[str, str | None],
         members: list[Member], max_moves: int, assign: Callable[[str], Member | None] | None = None) -> Plan:
    """What instance `me` should do this round.

    `holders` maps a company to the instance holding its lease (None: nobody). A company
    whose lease we hold stays ours until we hand it over; one held elsewhere is never
    started here; a free one is started by the member it is assigned to. `assign` may
    stand in for `owner_for` over `members` (a cache of it).
    """
    local = set(local)
    result = Plan()
    assign = assign or (lambda company_id: owner_for(company_id, members))
    for company_id in sorted(set(companies) | local):
        target = assign(company_id)
        if target is not None:
            result.assigned[company_id] = target.id
        holder = holders.get(company_id)
        mine = target is not None and target.id == me
        if company_id in local:
            if holder is not None and holder != me:
                result.evict.append(company_id)
            elif not mine and target is not None and len(result.hand_over) < max_moves:
                result.hand_over.append(company_id)
        elif mine and holder in (None, me):
            result.take.append(company_id)
    return result


class Assignments:
    """owner_for() remembered per company until the member list changes (a round over
    10,000 companies then hashes only the new ones)."""

    def __init__(self) -> None:
        self._members: tuple = ()
        self._cache: dict[str, Member | None] = {}

    def for_members(self, members: list[Member]) -> Callable[[str], Member | None]:
        key = tuple(sorted((m.id, m.url, m.capacity, m.draining) for m in members))
        if key != self._members:
            self._members, self._cache = key, {}
        cache = self._cache

        def assign(company_id: str) -> Member | None:
            try:
                return cache[company_id]
            except KeyError:
                cache[company_id] = target = owner_for(company_id, members)
                return target
        return assign
