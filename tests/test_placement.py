"""Placement by weighted rendezvous hashing: balanced by capacity, few moves on a join,
none to a draining member, and a bounded number of hand-overs a round."""
from __future__ import annotations

import collections

from switchboard.supervision.placement import Member, owner_for, plan

COMPANIES = [f"c{i}" for i in range(3000)]


def test_companies_spread_in_proportion_to_capacity():
    members = [Member("a", "", 100), Member("b", "", 100), Member("c", "", 200)]
    counts = collections.Counter(owner_for(c, members).id for c in COMPANIES)
    assert abs(counts["a"] - 750) < 120 and abs(counts["b"] - 750) < 120 and abs(counts["c"] - 1500) < 150


def test_a_join_moves_only_companies_to_the_new_member():
    before = [Member("a", ""), Member("b", "")]
    after = before + [Member("c", "")]
    moved = [c for c in COMPANIES if owner_for(c, before).id != owner_for(c, after).id]
    assert all(owner_for(c, after).id == "c" for c in moved)
    assert 800 < len(moved) < 1200                      # about a third


def test_a_draining_member_is_assigned_nothing():
    members = [Member("a", "", draining=True), Member("b", "")]
    assert {owner_for(c, members).id for c in COMPANIES[:200]} == {"b"}
    assert owner_for("x", [Member("a", "", draining=True)]) is None


def test_the_plan_takes_free_companies_hands_over_at_most_max_moves_and_evicts_foreign_ones():
    members = [Member("a", ""), Member("b", "")]
    mine = [c for c in COMPANIES[:100] if owner_for(c, members).id == "a"]
    theirs = [c for c in COMPANIES[:100] if owner_for(c, members).id == "b"]
    holders = {c: "a" for c in theirs[:10]}            # we hold 10 that now belong to b
    holders[mine[0]] = "b"                              # b still holds one of ours (handing it over)
    local = theirs[:10] + [theirs[10]]                  # and a local actor whose lease b took
    holders[theirs[10]] = "b"
    result = plan("a", COMPANIES[:100], local, holders, members, max_moves=3)
    assert result.hand_over == sorted(theirs[:10])[:3]
    assert result.evict == [theirs[10]]
    assert mine[0] not in result.take and set(result.take) == set(mine[1:])
