"""Canary rollouts on a goosebit server (hawkBit DDI), through its admin API.

goosebit rolls a release out per *feed* and counts each rollout's successes
and failures, but has no stages or thresholds. This adds them, the way a
fleet engineer would do by hand:

1. the release is uploaded (goosebit reads its sw-description: version,
   board, revisions);
2. the canary devices are moved to the canary feed and get the release;
3. their reports are awaited: more failures than allowed (default none), or
   no verdict before the deadline, pauses the rollout and stops, and the
   rest of the fleet never gets the release;
4. otherwise the release is rolled out to the fleet's feed and, with
   ``watch``, followed the same way: past the threshold it is paused.

Only the standard library: the tool runs in CI next to the signing step.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PyvorinError, VerificationError

#: A response larger than this is no answer of goosebit's admin API.
MAX_RESPONSE = 16 * 1024 * 1024


class RolloutError(PyvorinError):
    """The server refused or could not be reached, or the plan is wrong."""


class StageFailed(VerificationError):
    """A stage had more failures than allowed, or no verdict in time: its rollout is paused."""


@dataclass(frozen=True)
class Server:
    """goosebit's admin API (its UI's origin; keep it off the devices' network)."""

    url: str
    token: str
    timeout: float = 60.0

    def request(self, method: str, path: str, body: Any = None, *,
                upload: Path | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        data: bytes | Iterator[bytes] | None = None
        if upload is not None:
            data, headers["Content-Type"], headers["Content-Length"] = _multipart(upload)
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - the operator's URL
                text = response.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode(errors="replace").strip()
            raise RolloutError(f"{method} {path}: the server answered {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RolloutError(f"{method} {path}: cannot reach {self.url}: {reason}") from exc
        if len(text) > MAX_RESPONSE:
            raise RolloutError(f"{method} {path}: an answer of more than {MAX_RESPONSE} bytes")
        if not text:
            return None
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise RolloutError(f"{method} {path}: not JSON ({type(exc).__name__})") from exc


#: A release is streamed into the upload in pieces of this size: never whole in memory.
UPLOAD_CHUNK = 1 << 20


def _multipart(upload: Path) -> tuple[Iterator[bytes], str, str]:
    """A one-file multipart/form-data body read from ``upload`` as it is sent, its type and length."""
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{upload.name}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    try:
        size = upload.stat().st_size
    except OSError as exc:
        raise RolloutError(f"{upload}: {exc.strerror or exc}") from exc

    def body() -> Iterator[bytes]:
        yield head
        with open(upload, "rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK):
                yield chunk
        yield tail

    return body(), f"multipart/form-data; boundary={boundary}", str(len(head) + size + len(tail))


def login(url: str, user: str, password: str, timeout: float = 60.0) -> Server:
    """A token for ``user`` from goosebit's login form."""
    form = urllib.parse.urlencode({"username": user, "password": password}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/login", data=form, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the operator's URL
            answer = json.loads(response.read(MAX_RESPONSE))
    except urllib.error.HTTPError as exc:
        raise RolloutError(f"login as {user} at {url}: the server answered {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RolloutError(f"login at {url}: {getattr(exc, 'reason', exc)}") from exc
    except (ValueError, RecursionError) as exc:
        raise RolloutError(f"login at {url}: not JSON ({type(exc).__name__})") from exc
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise RolloutError(f"login at {url}: no access_token in the answer")
    return Server(url, token, timeout)


@dataclass(frozen=True)
class Stage:
    feed: str
    rollout_id: int
    expected: int  # devices whose verdict counts
    max_failures: int


@dataclass(frozen=True)
class Verdict:
    successes: int
    failures: int
    finished: bool
    stopped: bool


Hardware = tuple[str, str]  # (board, revision), as /etc/hwrevision names it


def release_hardware(description: Mapping[str, object]) -> frozenset[Hardware]:
    """The (board, revision) pairs a parsed sw-description is for, read as goosebit reads them to
    decide which devices it offers the release to: ``hardware-compatibility`` at the top (board
    ``default``), per board, and per board's software set; none at all means ``default default``."""
    software = description.get("software")
    if not isinstance(software, Mapping):
        raise RolloutError("the release's sw-description has no software section")
    pairs: set[Hardware] = set()

    def add(board: str, node: object) -> None:
        revisions = node.get("hardware-compatibility") if isinstance(node, Mapping) else None
        if isinstance(revisions, list):
            pairs.update((board, str(revision)) for revision in revisions)

    add("default", software)
    for board, node in software.items():
        add(board, node)
        if isinstance(node, Mapping):
            for inner in node.values():
                add(board, inner)
    return frozenset(pairs or {("default", "default")})


def _hardware(device: Mapping[str, Any]) -> Hardware | None:
    """What the device reported to the server (suricatta's hw_boardname, hw_revision), if it has."""
    hardware = device.get("hardware")
    if not isinstance(hardware, Mapping):
        return None
    model, revision = hardware.get("model"), hardware.get("revision")
    return (model, revision) if isinstance(model, str) and isinstance(revision, str) else None


def _describe(pairs: frozenset[Hardware]) -> str:
    return ", ".join(f"{board} {revision}" for board, revision in sorted(pairs))


@dataclass(frozen=True)
class Plan:
    release: Path
    canaries: tuple[str, ...]
    #: What the release is for (:func:`release_hardware`): canaries must be such devices, and only
    #: such devices of the fleet count (the server offers the release to no other).
    hardware: frozenset[Hardware]
    canary_feed: str = "canary"
    feed: str = "default"
    max_failures: int = 0
    timeout: float = 3600.0
    poll: float = 10.0
    watch: bool = False


def _listing(server: Server, kind: str) -> list[dict[str, Any]]:
    """``GET /api/v1/<kind>``'s list of objects (``devices``, ``rollouts``), or RolloutError."""
    answer = server.request("GET", f"/api/v1/{kind}")
    listed = answer.get(kind) if isinstance(answer, dict) else None
    if not isinstance(listed, list):
        raise RolloutError(f"GET /api/v1/{kind}: no {kind[:-1]} list in the answer")
    return [entry for entry in listed if isinstance(entry, dict)]


def _devices(server: Server) -> list[dict[str, Any]]:
    return _listing(server, "devices")


def _rollout(server: Server, feed: str, software_id: int, name: str) -> int:
    server.request("PUT", "/api/v1/rollouts", {"name": name, "feed": feed, "software_id": software_id})
    ids = [r.get("id") for r in _rollouts(server) if r.get("feed") == feed and r.get("name") == name]
    if not ids or not isinstance(ids[-1], int):
        raise RolloutError(f"rollout {name} on feed {feed} was not created")
    return ids[-1]


def _rollouts(server: Server) -> list[dict[str, Any]]:
    return _listing(server, "rollouts")


def _counts(server: Server, rollout_id: int) -> tuple[int, int]:
    for entry in _rollouts(server):
        if entry.get("id") == rollout_id:
            successes, failures = entry.get("success_count"), entry.get("failure_count")
            if not isinstance(successes, int) or not isinstance(failures, int):
                raise RolloutError(f"rollout {rollout_id}: malformed counts {successes!r}/{failures!r}")
            return successes, failures
    raise RolloutError(f"rollout {rollout_id} is gone from the server")


def await_stage(server: Server, stage: Stage, timeout: float, poll: float,
                clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Verdict:
    """Wait for ``stage``'s verdicts; pause its rollout past the failure threshold or the deadline."""
    deadline = clock() + timeout
    while True:
        successes, failures = _counts(server, stage.rollout_id)
        if failures > stage.max_failures:
            server.request("PATCH", "/api/v1/rollouts", {"ids": [stage.rollout_id], "paused": True})
            return Verdict(successes, failures, finished=False, stopped=True)
        if successes + failures >= stage.expected:
            return Verdict(successes, failures, finished=True, stopped=False)
        if clock() >= deadline:
            server.request("PATCH", "/api/v1/rollouts", {"ids": [stage.rollout_id], "paused": True})
            return Verdict(successes, failures, finished=False, stopped=True)
        sleep(poll)


def run(server: Server, plan: Plan, say: Callable[[str], None] = print) -> Verdict:
    """The whole rollout of ``plan``; raises :class:`StageFailed` when a stage stops it."""
    if not plan.canaries:
        raise RolloutError("a rollout needs at least one canary device")
    if plan.canary_feed == plan.feed:
        raise RolloutError(f"the canary feed and the fleet's feed are both {plan.feed!r}")
    known = {d.get("id"): d for d in _devices(server)}
    unknown = [c for c in plan.canaries if c not in known]
    if unknown:
        raise RolloutError(f"canary devices the server does not know: {', '.join(unknown)}")
    # A canary of other hardware would never be offered the release: its stage would only time out.
    for name in plan.canaries:
        hardware = _hardware(known[name])
        if hardware is None:
            raise RolloutError(f"canary {name} has not reported its hardware yet: nothing uploaded")
        if hardware not in plan.hardware:
            raise RolloutError(f"canary {name} is {hardware[0]} {hardware[1]}, the release is for "
                               f"{_describe(plan.hardware)}: nothing uploaded")
    uploaded = server.request("PUT", "/api/v1/software", upload=plan.release)
    software_id = uploaded.get("id") if isinstance(uploaded, dict) else None
    if not isinstance(software_id, int):
        raise RolloutError(f"upload of {plan.release.name}: no software id in the answer")
    say(f"uploaded {plan.release.name}: software {software_id}")
    server.request("PATCH", "/api/v1/devices", {"devices": list(plan.canaries), "feed": plan.canary_feed})
    canary = Stage(plan.canary_feed, _rollout(server, plan.canary_feed, software_id,
                                              f"{plan.release.stem}-canary"),
                   len(plan.canaries), plan.max_failures)
    say(f"canary rollout {canary.rollout_id} to {', '.join(plan.canaries)} (feed {plan.canary_feed})")
    verdict = await_stage(server, canary, plan.timeout, plan.poll)
    if verdict.stopped:
        raise StageFailed(f"canaries: {verdict.successes} succeeded, {verdict.failures} failed of "
                           f"{canary.expected} (at most {plan.max_failures} failures allowed, or no verdict in "
                           f"{plan.timeout:.0f}s): rollout {canary.rollout_id} paused, the fleet left as it is")
    say(f"canaries: {verdict.successes} of {canary.expected} succeeded")
    fleet_id = _rollout(server, plan.feed, software_id, f"{plan.release.stem}-{plan.feed}")
    say(f"fleet rollout {fleet_id} (feed {plan.feed})")
    if not plan.watch:
        return verdict
    members = [d for d in _devices(server) if d.get("feed") == plan.feed]
    fitting = [d for d in members if _hardware(d) in plan.hardware]
    if len(fitting) < len(members):
        say(f"fleet: {len(members) - len(fitting)} of {len(members)} devices are other hardware (or have not "
            f"reported theirs): the release is not for them")
    fleet = Stage(plan.feed, fleet_id, len(fitting), plan.max_failures)
    verdict = await_stage(server, fleet, plan.timeout, plan.poll)
    if verdict.stopped:
        raise StageFailed(f"fleet: {verdict.failures} failed, {verdict.successes} succeeded of {fleet.expected}: "
                           f"rollout {fleet_id} paused")
    say(f"fleet: {verdict.successes} of {fleet.expected} succeeded")
    return verdict
