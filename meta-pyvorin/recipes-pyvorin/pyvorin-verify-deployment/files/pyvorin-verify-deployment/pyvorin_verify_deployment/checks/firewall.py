"""The firewall check, on the live ruleset (`nft -j list ruleset`).

Expected, as the image's hardening ruleset promises: input dropped by default
for IPv4 and IPv6; SSH accepted only from a source subnet (the management
network) and never from anywhere; the agent's port accepted only on the
loopback interface.  The analysis follows jump/goto into regular chains and
over-approximates what is accepted (a drop rule earlier in the chain is not
credited), so it can only err on the side of failing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyvorin_verify_deployment.context import Context
from pyvorin_verify_deployment.result import Result, failed, passed

NOT_TCP = {"udp", "udplite", "icmp", "icmpv6", "sctp", "dccp", "esp", "ah", "igmp", "gre"}
MAX_DEPTH = 16


@dataclass(frozen=True)
class Flow:
    """One way for a packet to reach "accept": the conjunction of matches on the way."""

    matches: tuple[dict[str, Any], ...]
    # Elements of the named sets of the chain's table ("@name" in a match), by name.
    sets: dict[str, list[Any]] = field(default_factory=dict)

    def _of(self, kind: str, key: str) -> list[dict[str, Any]]:
        found = []
        for match in self.matches:
            left = match.get("left")
            if isinstance(left, dict) and kind in left and isinstance(left[kind], dict):
                inner = left[kind]
                if inner.get("key") == key or inner.get("field") == key:
                    found.append(match)
        return found

    @property
    def loopback_only(self) -> bool:
        return any(m.get("op") == "==" and m.get("right") == "lo"
                   for m in self._of("meta", "iif") + self._of("meta", "iifname"))

    @property
    def admits_new(self) -> bool:
        for match in self._of("ct", "state"):
            states = _values(match.get("right"))
            if match.get("op") in ("==", "in") and "new" not in states:
                return False
        return True

    @property
    def source_restricted(self) -> bool:
        return any(m.get("op") in ("==", "in") for m in self._of("payload", "saddr"))

    @property
    def tcp_possible(self) -> bool:
        for match in self.matches:
            left = match.get("left")
            if isinstance(left, dict) and isinstance(left.get("payload"), dict):
                if left["payload"].get("protocol") in NOT_TCP:
                    return False
        for match in self._of("meta", "l4proto"):
            protocols = _values(match.get("right"))
            if match.get("op") in ("==", "in") and "tcp" not in protocols and 6 not in protocols:
                return False
        return True

    def dport_matches(self) -> list[dict[str, Any]]:
        return [m for m in self._of("payload", "dport")
                if m["left"]["payload"].get("protocol") in ("tcp", "th", None)]

    def reaches_port(self, port: int) -> bool:
        for match in self.dport_matches():
            contained = _contains(match.get("right"), port, self.sets)
            if (match.get("op") == "!=") == contained:
                return False
        return True


def _values(right: Any) -> list[Any]:
    if isinstance(right, list):
        return right
    if isinstance(right, dict) and isinstance(right.get("set"), list):
        return list(right["set"])
    return [right]


def _contains(right: Any, port: int, sets: dict[str, list[Any]]) -> bool:
    if isinstance(right, bool):
        return True
    if isinstance(right, int):
        return right == port
    if isinstance(right, str) and right.startswith("@") and right[1:] in sets:
        return any(_contains(item, port, sets) for item in sets[right[1:]])
    if isinstance(right, dict) and isinstance(right.get("elem"), dict):
        return _contains(right["elem"].get("val"), port, sets)
    if isinstance(right, dict) and isinstance(right.get("range"), list) and len(right["range"]) == 2:
        low, high = right["range"]
        return isinstance(low, int) and isinstance(high, int) and low <= port <= high
    if isinstance(right, dict) and isinstance(right.get("set"), list):
        return any(_contains(item, port, sets) for item in right["set"])
    if isinstance(right, list):
        return any(_contains(item, port, sets) for item in right)
    # An unknown set, a map or a service name: cannot tell here, so assume it matches.
    return True


def _named_sets(objects: list[dict[str, Any]], family: str, table: str) -> dict[str, list[Any]]:
    """The elements of each named set in one table; an empty set has no "elem" and matches nothing."""
    found: dict[str, list[Any]] = {}
    for obj in objects:
        named = obj.get("set")
        if isinstance(named, dict) and (named.get("family"), named.get("table")) == (family, table):
            elements = named.get("elem", [])
            found[str(named.get("name"))] = list(elements) if isinstance(elements, list) else [elements]
    return found


def _flows(objects: list[dict[str, Any]], family: str, table: str, chain: str,
           inherited: tuple[dict[str, Any], ...], depth: int) -> Iterator[Flow]:
    if depth > MAX_DEPTH:
        return
    sets = _named_sets(objects, family, table)
    for obj in objects:
        rule = obj.get("rule")
        if not isinstance(rule, dict) or (rule.get("family"), rule.get("table"), rule.get("chain")) != (
                family, table, chain):
            continue
        matches = inherited + tuple(e["match"] for e in rule.get("expr", []) if isinstance(e.get("match"), dict))
        for expr in rule.get("expr", []):
            if "accept" in expr:
                yield Flow(matches, sets)
            for verb in ("jump", "goto"):
                if isinstance(expr.get(verb), dict):
                    yield from _flows(objects, family, table, expr[verb].get("target", ""), matches, depth + 1)


def analyse(ruleset: dict[str, Any], ssh_port: int, agent_port: int) -> list[str]:
    """Problems with ``ruleset`` (nft's JSON), empty when it meets the expectations."""
    objects = [o for o in ruleset.get("nftables", []) if isinstance(o, dict)]
    inputs = [o["chain"] for o in objects if isinstance(o.get("chain"), dict) and o["chain"].get("hook") == "input"]
    dropping = {c.get("family") for c in inputs if c.get("policy") == "drop"}
    problems = []
    if not ("inet" in dropping or {"ip", "ip6"} <= dropping):
        problems.append("no input chain with policy drop for both IPv4 and IPv6")
    flows = [f for c in inputs for f in _flows(objects, c["family"], c["table"], c["name"], (), 0)]
    opened = [f for f in flows if f.tcp_possible and f.admits_new and not f.loopback_only]
    if any(f.reaches_port(ssh_port) and not f.source_restricted for f in opened):
        problems.append(f"SSH (tcp {ssh_port}) is accepted from any source address")
    elif not any(f.dport_matches() and f.reaches_port(ssh_port) and f.source_restricted for f in opened):
        problems.append(f"no rule accepts SSH (tcp {ssh_port}) from a management subnet")
    if any(f.reaches_port(agent_port) for f in opened):
        problems.append(f"the agent port tcp {agent_port} is accepted on a non-loopback interface")
    return problems


def firewall(ctx: Context) -> Result:
    name = "firewall"
    result = ctx.run("nft", "-j", "list", "ruleset")
    if result.returncode != 0:
        return failed(name, f"nft -j list ruleset failed: {(result.stderr or result.stdout).strip()[:200]}")
    try:
        ruleset = json.loads(result.stdout)
    except ValueError:
        return failed(name, "nft -j list ruleset did not print JSON")
    problems = analyse(ruleset, ctx.expect.ssh_port, ctx.settings.port)
    if problems:
        return failed(name, "; ".join(problems))
    return passed(name, f"input policy drop; SSH only from a subnet; port {ctx.settings.port} only on loopback")
