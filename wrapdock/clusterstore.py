"""The cluster store seam: get, put, atomic claim, release, list; etcd behind it, through `etcdctl`.

Pure: this module only builds `etcdctl` command lines (queries for the runner, Steps with their undo
for plans) and parses their output. Nothing here talks to etcd itself: every read and write is a
command in the trail and in `--print-only` scripts (Debian's etcdctl 3.4, v3 API).

Facts this relies on (etcdctl 3.4.23, measured):
- `etcdctl txn` exits 0 when the transaction FAILS too: a claim is a Step that `answers` SUCCESS (the
  runner reads the first output line; the script pipes it through `sed -n 1p | grep -x SUCCESS`, readers
  that take the whole output: the script runs with pipefail, an early exit would SIGPIPE etcdctl).
- `etcdctl txn` ignores --command-timeout (it waits forever for an unreachable cluster), so it runs
  under coreutils' `timeout`; `get` honours --dial-timeout/--command-timeout and exits 1 when etcd
  cannot be reached.
- values inside txn lines are split like a shell would (Argify): a double-quoted value with backslash
  escapes is one word; single quotes do not work.
- TLS comes from etcdctl's own environment (ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY), which the
  runner's commands inherit; with any of them set the endpoints are https://. ETCDCTL_ENDPOINTS (or
  another ETCDCTL_ variable that shadows a flag wrapdock passes) makes etcdctl refuse to run.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol

from wrapdock.errors import UsageError
from wrapdock.plan import Step, cmd

PREFIX = "/wrapdock/v1"  # versioned: a later layout gets /wrapdock/v2, side by side
DIAL_TIMEOUT = "4s"
COMMAND_TIMEOUT = "8s"
TXN_TIMEOUT = "15"  # seconds, for `timeout`: txn has no timeout of its own
TLS_VARIABLES = ("ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY")
URL_FORM = "etcd://IP:PORT[,IP:PORT...]"


# -- keys -----------------------------------------------------------------------------------------------
def network_prefix(name: str) -> str:
    """Everything about one cluster network lives under this prefix (one `get --prefix` reads it)."""
    return f"{PREFIX}/networks/{name}/"


def config_key(name: str) -> str:
    return f"{network_prefix(name)}config"


def host_key(name: str, vtep: IPv4Address | str) -> str:
    return f"{network_prefix(name)}hosts/{vtep}"


def range_key(name: str, host_range: str) -> str:
    return f"{network_prefix(name)}ranges/{host_range.replace('/', '-')}"


def name_key(name: str, container: str) -> str:
    return f"{network_prefix(name)}names/{container}"


def vni_key(vni: int) -> str:
    return f"{PREFIX}/vnis/{vni}"


NETWORKS_PREFIX = f"{PREFIX}/networks/"
VNIS_PREFIX = f"{PREFIX}/vnis/"
# the name of the cluster network defined last: every create writes it, and requires its mod revision
# unchanged since the read its subnet check decided on (etcdctl compares one key, not a prefix)
LAST_CREATED_KEY = f"{PREFIX}/last-created"


# -- the cluster URL --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cluster:
    """Where etcd answers: one or more IP:PORT endpoints (--cluster etcd://IP:PORT[,IP:PORT...])."""

    endpoints: tuple[str, ...]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(self.endpoints)

    def etcdctl(self, *args: str, tls: bool | None = None) -> tuple[str, ...]:
        scheme = "https" if (uses_tls() if tls is None else tls) else "http"
        return ("etcdctl", "--endpoints=" + ",".join(f"{scheme}://{e}" for e in self.endpoints),
                f"--dial-timeout={DIAL_TIMEOUT}", f"--command-timeout={COMMAND_TIMEOUT}", *args)


def uses_tls() -> bool:
    return any(os.environ.get(name) for name in TLS_VARIABLES)


_ENDPOINT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$")


def parse_url(text: str) -> Cluster:
    """etcd://IP:PORT[,IP:PORT...], or one clear error (IP addresses only: no name lookups)."""
    if not text.startswith("etcd://") or len(text) == len("etcd://"):
        raise UsageError(f"invalid --cluster {text!r}: expected {URL_FORM}")
    endpoints: list[str] = []
    for part in text[len("etcd://"):].split(","):
        match = _ENDPOINT.match(part)
        if match is None:
            raise UsageError(f"invalid --cluster {text!r}: {part!r} is not IP:PORT (expected {URL_FORM})")
        try:
            address = IPv4Address(match.group(1))
        except ValueError:
            raise UsageError(f"invalid --cluster {text!r}: {match.group(1)!r} is not an IPv4 address") from None
        port = int(match.group(2))
        if not 1 <= port <= 65535:
            raise UsageError(f"invalid --cluster {text!r}: port {port} is not between 1 and 65535")
        endpoint = f"{address}:{port}"
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    return Cluster(tuple(endpoints))


# -- values -----------------------------------------------------------------------------------------------
def encode(value: Mapping[str, object] | str) -> str:
    """Compact JSON (or a plain string), as etcd stores it."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


def txn_word(value: str) -> str:
    """One word of a txn line: double quotes with backslash escapes (etcdctl's Argify)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_get(text: str) -> dict[str, str]:
    """`etcdctl get --prefix -w json` -> {key: value} (both base64 in the JSON)."""
    data = json.loads(text or "{}")
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in data.get("kvs", [])}


def parse_revisions(text: str) -> dict[str, int]:
    """`etcdctl get --prefix -w json` -> {key: mod revision} (what a `mod("K") = "R"` compare checks)."""
    data = json.loads(text or "{}")
    return {base64.b64decode(kv["key"]).decode(): int(kv["mod_revision"]) for kv in data.get("kvs", [])}


@dataclass(frozen=True)
class Fence:
    """Optimistic concurrency on one key: a claim decided on a read requires the key's mod revision
    unchanged since (`revision`; 0: it was absent) and writes `value` to it, so of two claims decided
    on the same read one fails (FAILURE: read again, decide again). Undone or released, the key is
    deleted only while it still holds `value` (a later claim's value stays)."""

    key: str
    revision: int
    value: str


# -- the seam ---------------------------------------------------------------------------------------------
class Store(Protocol):
    """What the cluster operations need from a store; each method is a command line or a Step."""

    def list_query(self, prefix: str) -> tuple[str, ...]: ...
    def parse_list(self, text: str) -> dict[str, str]: ...
    def put(self, key: str, value: str, note: str, previous: str | None) -> Step: ...
    def claim(self, values: Mapping[str, str], note: str, require: Iterable[str] = (),
              fence: Fence | None = None) -> Step: ...
    def release(self, values: Mapping[str, str], note: str, fence: Fence | None = None) -> Step: ...


@dataclass(frozen=True)
class EtcdStore:
    """The store in etcd, through `etcdctl` (v3)."""

    cluster: Cluster

    def list_query(self, prefix: str) -> tuple[str, ...]:
        """get (and list): every key under a prefix, as JSON."""
        return self.cluster.etcdctl("get", "--prefix", prefix, "-w", "json")

    def parse_list(self, text: str) -> dict[str, str]:
        return parse_get(text)

    def _txn(self, compares: Iterable[str], success: Iterable[str], note: str, answers: str | None = None,
             undo: Step | None = None, failure: Iterable[str] = ()) -> Step:
        stdin = [*compares, "", *success, "", *failure, ""]  # compares, success ops, failure ops
        return cmd("timeout", TXN_TIMEOUT, *self.cluster.etcdctl("txn"), note=note, stdin=stdin,
                   answers=answers, undo=undo)

    def put(self, key: str, value: str, note: str, previous: str | None) -> Step:
        """One key written; undone by writing back what it held (or deleting it)."""
        undo = (cmd(*self.cluster.etcdctl("put", key, previous), note=note) if previous is not None
                else cmd(*self.cluster.etcdctl("del", key), note=note))
        return cmd(*self.cluster.etcdctl("put", key, value), note=note, undo=undo)

    def claim(self, values: Mapping[str, str], note: str, require: Iterable[str] = (),
              fence: Fence | None = None) -> Step:
        """Atomic: every key written only if none of them exists (create("K") = "0"), every `require`d
        key does and the `fence` key is unchanged since its read (then it is written too); FAILURE (exit
        0!) is a failed step, whose output shows who holds the keys (the failure branch reads them).
        Undone by deleting the claimed keys (and the fence key while it holds the claim's value)."""
        compares = [f'create("{key}") = "0"' for key in values] + [f'version("{key}") > "0"' for key in require]
        puts = [f"put {key} {txn_word(value)}" for key, value in values.items()]
        reads = [f"get {key}" for key in values]
        dels = [f"del {key}" for key in values]
        if fence is None:
            undo = self._txn((), dels, note)
        else:
            compares.append(f'mod("{fence.key}") = "{fence.revision}"')
            puts.append(f"put {fence.key} {txn_word(fence.value)}")
            reads.append(f"get {fence.key}")
            undo = self._txn([_holds(fence)], [*dels, f"del {fence.key}"], note, failure=dels)
        return self._txn(compares, puts, note, answers="SUCCESS", undo=undo, failure=reads)

    def release(self, values: Mapping[str, str], note: str, fence: Fence | None = None) -> Step:
        """Delete keys (their current `values` known), and the `fence` key while it holds its value;
        undone by writing them back (the fence key only if it is absent then)."""
        dels = [f"del {key}" for key in values]
        puts = [f"put {key} {txn_word(value)}" for key, value in values.items()]
        if fence is None:
            return self._txn((), dels, note, undo=self._txn((), puts, note))
        undo = self._txn([f'create("{fence.key}") = "0"'], [*puts, f"put {fence.key} {txn_word(fence.value)}"],
                         note, failure=puts)
        return self._txn([_holds(fence)], [*dels, f"del {fence.key}"], note, undo=undo, failure=dels)


def _holds(fence: Fence) -> str:
    """The compare "the fence key still holds this value" (etcdctl reads the value Go-quoted)."""
    return f'value("{fence.key}") = {txn_word(fence.value)}'
