"""The plugin's side of `wrapdock cni serve` (no root): a call goes to the server only when one answers
and accepts it; a server that took the call and ended without an answer is CNI error 11, never a second
attempt in the plugin; and the server's reasons to decline."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from wrapdock import cni, cniserver, state

CONF = json.dumps({"cniVersion": "1.0.0", "name": "wdnet", "type": "wrapdock"})
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/c1"}


def fake_server(folder: Path, reply: bytes | None) -> tuple[threading.Thread, list[dict]]:
    """A server socket in folder/cni/server.sock answering one call with `reply` (None: closes)."""
    (folder / "cni").mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(folder / cni.SERVER_SOCKET))
    listener.listen(1)
    got: list[dict] = []

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            got.append(json.loads(cniserver._read_all(conn)))
            if reply is not None:
                conn.sendall(reply)
        listener.close()

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    return thread, got


def offer(folder: Path, env: dict | None = None) -> tuple[int, str] | None:
    call = cni.parse({**ENV, **(env or {})}, CONF)
    return cni._offer(call, {**ENV, "WRAPDOCK_STATE_DIR": str(folder), **(env or {})}, CONF)


def test_no_server_means_the_plugin_does_it(tmp_path: Path) -> None:
    assert offer(tmp_path) is None
    (tmp_path / "cni").mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / cni.SERVER_SOCKET))  # bound, never listening: a dead server's file
    assert offer(tmp_path) is None
    stale.close()


def test_the_server_answer_is_relayed_and_the_request_complete(tmp_path: Path) -> None:
    thread, got = fake_server(tmp_path, json.dumps({"code": 0, "stdout": '{"ips": []}\n'}).encode())
    assert offer(tmp_path) == (0, '{"ips": []}\n')
    thread.join(5)
    [request] = got
    assert request["protocol"] == cni.SERVER_PROTOCOL and request["stdin"] == CONF
    assert request["env"]["CNI_CONTAINERID"] == "c1" and request["identity"] == cni.server_identity()


def test_a_declining_server_leaves_the_call_to_the_plugin(tmp_path: Path) -> None:
    thread, _ = fake_server(tmp_path, json.dumps({"fallback": "mnt differs"}).encode())
    assert offer(tmp_path) is None
    thread.join(5)


@pytest.mark.parametrize("reply", [None, b"", b"not json", b'{"code": "0"}'])
def test_a_call_the_server_took_without_answering_is_try_again(tmp_path: Path, reply: bytes | None) -> None:
    thread, _ = fake_server(tmp_path, reply)
    with pytest.raises(cni.CniError) as caught:
        offer(tmp_path)
    assert caught.value.code == cni.TRY_AGAIN and "without an answer" in caught.value.msg
    thread.join(5)


def test_the_servers_own_child_never_offers_again(tmp_path: Path) -> None:
    thread, got = fake_server(tmp_path, json.dumps({"code": 0, "stdout": ""}).encode())
    assert offer(tmp_path, env={cni.SERVED_BY_VARIABLE: "1"}) is None
    assert got == []
    offer(tmp_path)  # let the fake server end
    thread.join(5)


def test_the_server_declines_what_it_must_not_do() -> None:
    mine = {"uid": 0, "mnt": "mnt:[1]", "net": "net:[2]", "wrapdock": "0.1.0 /x"}
    request = {"protocol": cni.SERVER_PROTOCOL, "identity": dict(mine), "env": {}, "stdin": ""}
    assert cniserver.mismatch(request, mine) is None
    assert "protocol" in cniserver.mismatch({**request, "protocol": 99}, mine)
    for key in mine:
        reason = cniserver.mismatch({**request, "identity": {**mine, key: "other"}}, mine)
        assert reason is not None and reason.startswith(f"{key} differs")
    assert cniserver.mismatch({**request, "env": None}, mine) is not None
    assert cniserver.mismatch({**request, "identity": None}, mine) is not None


def test_the_plugins_default_state_dir_is_wrapdocks() -> None:
    assert str(state.DEFAULT_STATE_DIR) == cni.DEFAULT_STATE_DIR
