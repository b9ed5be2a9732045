"""The mesh's core scenario driven by python-socketio against any mesh server.

Env: MESH_URL, TOKEN_ALICE, TOKEN_BOB, TOKEN_BAD. Prints one line per check; exits non-zero
on the first failure.
"""
import asyncio
import os
import sys
import uuid

import socketio


async def connect(token, inbox, refusals=None):
    client = socketio.AsyncClient(reconnection=False)

    @client.event
    async def connect_error(data):
        if refusals is not None:
            refusals.append(data)

    @client.on("message")
    async def on_message(envelope):
        inbox.append(envelope)
        return {"ok": True}  # the return value is the ack

    await client.connect(os.environ["MESH_URL"], auth={"token": token}, wait_timeout=5)
    return client


async def main():
    refusals = []
    try:
        await connect(os.environ["TOKEN_BAD"], [], refusals)
        raise AssertionError("a bad token was accepted")
    except socketio.exceptions.ConnectionError:
        pass
    assert refusals and refusals[0]["message"].startswith("unauthorized: "), refusals
    print("ok - bad token refused with 'unauthorized: ...'")

    alice_inbox, bob_inbox = [], []
    alice = await connect(os.environ["TOKEN_ALICE"], alice_inbox)
    bob = await connect(os.environ["TOKEN_BOB"], bob_inbox)
    print("ok - both agents connected")

    presence = await alice.call("presence", {}, timeout=5)
    assert sorted(a["id"] for a in presence["agents"]) == ["alice", "bob"], presence
    print("ok - presence lists both agents")

    for client in (alice, bob):
        joined = await client.call("group:join", {"group": "ops"}, timeout=5)
        assert joined["ok"] is True, joined
    print("ok - both joined group ops")

    message_id = str(uuid.uuid4())
    ack = await alice.call("message", {"id": message_id, "to": "bob", "text": "hello from python"}, timeout=10)
    assert ack == {"ok": True, "id": message_id, "status": "delivered"}, ack
    assert bob_inbox[-1]["from"] == "alice" and bob_inbox[-1]["text"] == "hello from python", bob_inbox
    print("ok - direct message delivered and acked by the recipient")

    again = await alice.call("message", {"id": message_id, "to": "bob", "text": "hello from python"}, timeout=10)
    assert again["status"] == "duplicate" and len(bob_inbox) == 1, (again, bob_inbox)
    print("ok - resend answered duplicate, not delivered twice")

    group = await bob.call("message", {"id": str(uuid.uuid4()), "group": "ops", "text": "to ops"}, timeout=10)
    assert group["status"] == "delivered" and group["delivered_to"] == ["alice"], group
    assert alice_inbox[-1]["group"] == "ops", alice_inbox
    print("ok - group message delivered to the other member")

    invalid = await alice.call("message", {"id": "x", "text": "nowhere"}, timeout=5)
    assert invalid["error"]["code"] == "invalid", invalid
    print("ok - malformed message answered invalid")

    await bob.disconnect()
    await alice.disconnect()


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    except Exception as err:  # noqa: BLE001 - report any failure as the test's
        print(f"not ok - {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
