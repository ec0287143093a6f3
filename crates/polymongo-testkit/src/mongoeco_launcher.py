"""polymongo-testkit launcher for mongoeco 4.11.0 (``mongoeco[wire]``).

Embedded in the Rust crate (include_str!) and written next to the cached
virtual environment. mongoeco has no command-line entry point: this script
starts its wire server, ``mongoeco.wire.proxy.AsyncMongoEcoProxyServer``, on
127.0.0.1 with the memory engine (or, with ``--sqlite FILE``, the SQLite engine
so that data survives a restart), after patching five things that make the
Rust ``mongodb`` driver unable to use it unpatched:

1. Int64 command options. The wire layer decodes BSON Int64 values into
   ``BsonInt64`` objects, which are not ``int``, so ``{find: "c", limit:
   Int64(1)}`` (what the driver's ``find_one`` sends) is refused with "wire find
   limit must be a non-negative integer"; the same for ``skip``, ``getMore``'s
   cursor id and ``killCursors``' list. We turn Int64 *option* values back into
   plain integers before the command is validated: top-level scalars of the
   command document, ``cursor.batchSize`` and ``killCursors``' ``cursors``.
   Documents, filters, updates and pipelines are lists or documents and are left
   alone, so stored Int64 values keep their type.
   (``mongoeco.wire.executor.build_request_context``)
2. Cursor ids as Int64. Cursor ids come from a counter starting at 1 and are
   encoded as Int32; the driver requires ``cursor.id`` to be Int64 (find,
   aggregate, listIndexes and listCollections replies are rejected). We wrap
   them in ``BsonInt64`` before encoding. (``mongoeco.wire.proxy.encode_op_msg_response``)
3. Error codes. Replies to unknown commands, argument errors and other
   internal errors carry no ``code``; the driver then reports "invalid reply"
   instead of a command error. We add MongoDB's codes where the message says which
   error it is: 59 (CommandNotFound) for unknown commands, 48 (NamespaceExists) for
   "collection ... already exists", 26 (NamespaceNotFound) for "collection ...
   does not exist"; else 2 (BadValue) for argument type and value errors, 8
   (UnknownError) for anything else.
   Errors that already have a code (duplicate keys, fail points...) are left as
   they are. (``mongoeco.wire.executor.build_error_document``)
4. Connection count. ``serverStatus.connections.current`` is hard-coded to 1;
   we report the live number of client connections of this server (and
   ``totalCreated``), so the test kit's connection probe tells the truth.
   (``WireSpecialCommandHandlers._handle_passthrough`` for ``serverStatus``)
5. Admin-routed ``renameCollection``. Drivers send ``{renameCollection:
   "db.a", to: "db.b"}`` to ``admin``; mongoeco only renames within the
   database the command runs on and refuses it. When both namespaces are in one
   database, we run the command on that database. (same place as patch 1)

Every start (and ``--self-test``) first runs a throwaway server of its own on a
free port and checks each patch through a real socket; if a target is missing
or a check fails, the launcher exits with status 3 and a message naming the
patch: a mongoeco upgrade must not silently drop one.

Usage:
    python -I -u mongoeco_launcher.py --self-test
    python -I -u mongoeco_launcher.py --port P [--sqlite FILE]    # always 127.0.0.1

SIGTERM and SIGINT close the server cleanly (exit status 0). While serving, a
watchdog thread ends the process if its parent (the test process) dies without
stopping it, so killed test runs leave no servers behind.
"""

import argparse
import asyncio
import os
import signal
import struct
import sys
import threading
import time

PATCH_EXIT_STATUS = 3
# Test servers are reachable from this machine only.
HOST = "127.0.0.1"
EXPECTED_VERSION = "4.11.0"

# Command fields that are session and routing metadata, not options.
_INTERNAL_KEYS = frozenset(
    {"$db", "$readPreference", "$clusterTime", "lsid", "txnNumber", "autocommit",
     "startTransaction", "$audit"}
)


def _fail(message):
    sys.stderr.write("polymongo-testkit mongoeco launcher: " + message + "\n")
    sys.stderr.flush()
    sys.exit(PATCH_EXIT_STATUS)


def check_version():
    try:
        from importlib.metadata import version

        found = version("mongoeco")
    except Exception as exc:
        found = "unknown (%s)" % exc
    if found != EXPECTED_VERSION:
        sys.stderr.write(
            "polymongo-testkit mongoeco launcher: warning: written for mongoeco %s, found %s\n"
            % (EXPECTED_VERSION, found)
        )


def _target(module, name):
    value = getattr(module, name, None)
    if value is None or not callable(value):
        _fail("%s.%s not found; a patch cannot apply" % (module.__name__, name))
    return value


def apply_patches():
    try:
        from mongoeco.core.bson_scalars import BsonInt64
        from mongoeco.errors import OperationFailure
        from mongoeco.wire import executor as executor_module
        from mongoeco.wire import proxy as proxy_module
        from mongoeco.wire._executor_handlers import WireSpecialCommandHandlers
    except ImportError as exc:
        _fail("cannot import mongoeco's wire modules: %s" % exc)

    # Patches 1 and 5: normalise the command before it is validated and routed.
    original_build = _target(executor_module, "build_request_context")

    def plain(value):
        return value.value if isinstance(value, BsonInt64) else value

    def patched_build(body, **kwargs):
        if isinstance(body, dict):
            for key, value in list(body.items()):
                if key not in _INTERNAL_KEYS and isinstance(value, BsonInt64):
                    body[key] = value.value
            cursor = body.get("cursor")
            if isinstance(cursor, dict) and isinstance(cursor.get("batchSize"), BsonInt64):
                cursor["batchSize"] = cursor["batchSize"].value
            if "killCursors" in body and isinstance(body.get("cursors"), list):
                body["cursors"] = [plain(v) for v in body["cursors"]]
            source, target = body.get("renameCollection"), body.get("to")
            if (
                kwargs.get("db_name") in (None, "admin")
                and body.get("$db", "admin") == "admin"
                and isinstance(source, str)
                and isinstance(target, str)
                and "." in source
                and source.split(".", 1)[0] == target.split(".", 1)[0]
                and source.split(".", 1)[0] != "admin"
            ):
                body["$db"] = source.split(".", 1)[0]
                if kwargs.get("db_name") == "admin":  # legacy OP_QUERY routing
                    kwargs["db_name"] = body["$db"]
        return original_build(body, **kwargs)

    executor_module.build_request_context = patched_build

    # Patch 2: cursor ids are Int64 on the wire.
    original_encode = _target(proxy_module, "encode_op_msg_response")

    def patched_encode(document, **kwargs):
        cursor = document.get("cursor") if isinstance(document, dict) else None
        if isinstance(cursor, dict):
            cursor_id = cursor.get("id")
            if isinstance(cursor_id, int) and not isinstance(cursor_id, bool):
                cursor["id"] = BsonInt64(cursor_id)
        return original_encode(document, **kwargs)

    proxy_module.encode_op_msg_response = patched_encode

    # Patch 3: every error reply has a code.
    original_error = _target(executor_module, "build_error_document")

    def patched_error(exc):
        document = original_error(exc)
        if isinstance(document, dict) and document.get("ok") in (0, 0.0) and "code" not in document:
            message = str(document.get("errmsg", ""))
            if message.startswith("unsupported wire command") or "no such command" in message:
                document["code"], document["codeName"] = 59, "CommandNotFound"
            elif message.startswith("collection '") and message.endswith("' already exists"):
                document["code"], document["codeName"] = 48, "NamespaceExists"
            elif message.startswith("collection '") and message.endswith("' does not exist"):
                document["code"], document["codeName"] = 26, "NamespaceNotFound"
            elif isinstance(exc, (TypeError, ValueError)):
                document["code"], document["codeName"] = 2, "BadValue"
            else:
                document["code"], document["codeName"] = 8, "UnknownError"
        return document

    executor_module.build_error_document = patched_error

    # Patch 4: the real number of live connections in serverStatus.
    server_cls = proxy_module.AsyncMongoEcoProxyServer
    original_init = _target(server_cls, "__init__")
    original_passthrough = _target(WireSpecialCommandHandlers, "_handle_passthrough")

    def patched_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        handlers = getattr(getattr(self, "_executor", None), "_handlers", None)
        registry = getattr(self, "_connections", None)
        if handlers is None or registry is None or not hasattr(registry, "_next_connection_id"):
            _fail("AsyncMongoEcoProxyServer internals changed; the connection-count patch cannot apply")
        handlers._polymongo_connections = registry

    async def patched_passthrough(self, context):
        result = await original_passthrough(self, context)
        registry = getattr(self, "_polymongo_connections", None)
        if (
            registry is not None
            and getattr(context, "command_name", None) == "serverStatus"
            and isinstance(result, dict)
            and isinstance(result.get("connections"), dict)
        ):
            current = len(registry)
            result["connections"]["current"] = current
            result["connections"]["totalCreated"] = registry._next_connection_id - 1
            result["connections"]["available"] = max(0, 1_000_000 - current)
        return result

    server_cls.__init__ = patched_init
    WireSpecialCommandHandlers._handle_passthrough = patched_passthrough
    return OperationFailure


class _RawClient:
    """One socket speaking OP_MSG, decoding replies with pymongo's bson (which keeps Int64)."""

    def __init__(self, reader, writer):
        self.reader, self.writer, self.request_id = reader, writer, 0

    @classmethod
    async def connect(cls, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def command(self, db, document):
        import bson

        self.request_id += 1
        body = bson.encode(dict(document, **{"$db": db}))
        payload = struct.pack("<i", 0) + b"\x00" + body
        self.writer.write(struct.pack("<iiii", 16 + len(payload), self.request_id, 0, 2013) + payload)
        await self.writer.drain()
        header = await self.reader.readexactly(16)
        length = struct.unpack("<i", header[:4])[0]
        reply = await self.reader.readexactly(length - 16)
        return bson.decode(reply[5:])

    async def close(self):
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def self_test():
    """Checks every patch through a real socket against a throwaway memory server."""
    from bson.int64 import Int64
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

    server = AsyncMongoEcoProxyServer(host="127.0.0.1", port=0)
    try:
        await server.start()
    except Exception as exc:
        _fail("self-test server did not start: %r" % (exc,))
    port = server.address.port
    first = second = None
    try:
        first = await _RawClient.connect(port)
        reply = await first.command("st", {"insert": "c", "documents": [{"_id": i} for i in range(3)]})
        if reply.get("ok") != 1 or reply.get("n") != 3:
            _fail("self-test insert failed: %r" % (reply,))

        reply = await first.command("st", {"find": "c", "filter": {}, "limit": Int64(2)})
        batch = reply.get("cursor", {}).get("firstBatch")
        if reply.get("ok") != 1 or not isinstance(batch, list) or len(batch) != 2:
            _fail("patch 1 (Int64 command options) ineffective: %r" % (reply,))

        reply = await first.command("st", {"find": "c", "filter": {}, "batchSize": 1})
        cursor_id = reply.get("cursor", {}).get("id")
        if not isinstance(cursor_id, Int64) or cursor_id == 0:
            _fail("patch 2 (Int64 cursor ids) ineffective: %r" % (reply,))
        reply = await first.command("st", {"getMore": Int64(cursor_id), "collection": "c"})
        if reply.get("ok") != 1 or len(reply.get("cursor", {}).get("nextBatch", [])) != 2:
            _fail("patch 1 (Int64 getMore cursor id) ineffective: %r" % (reply,))

        reply = await first.command("st", {"polymongoNoSuchCommand": 1})
        if reply.get("ok") != 0 or reply.get("code") != 59:
            _fail("patch 3 (error codes) ineffective: %r" % (reply,))
        reply = await first.command("st", {"create": "c"})
        if reply.get("ok") != 0 or reply.get("code") != 48:
            _fail("patch 3 (NamespaceExists code) ineffective: %r" % (reply,))

        second = await _RawClient.connect(port)
        await second.command("admin", {"ping": 1})
        reply = await first.command("admin", {"serverStatus": 1})
        current = reply.get("connections", {}).get("current")
        if current != 2:
            _fail("patch 4 (connection count) ineffective: 2 connections open, %r reported" % (current,))
        await second.close()
        second = None
        deadline = time.monotonic() + 5
        while True:
            reply = await first.command("admin", {"serverStatus": 1})
            if reply.get("connections", {}).get("current") == 1:
                break
            if time.monotonic() > deadline:
                _fail("patch 4 (connection count) ineffective: a closed connection is still counted: %r"
                      % (reply.get("connections"),))
            await asyncio.sleep(0.01)

        reply = await first.command("admin", {"renameCollection": "st.c", "to": "st.d"})
        if reply.get("ok") != 1:
            _fail("patch 5 (admin-routed renameCollection) ineffective: %r" % (reply,))
        reply = await first.command("st", {"count": "d"})
        if reply.get("n") != 3:
            _fail("patch 5 (admin-routed renameCollection) did not move the documents: %r" % (reply,))
    except SystemExit:
        raise
    except Exception as exc:
        _fail("self-test failed: %r" % (exc,))
    finally:
        for client in (first, second):
            if client is not None:
                await client.close()
        await server.close()


def start_parent_watchdog():
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="polymongo-parent-watchdog", daemon=True).start()


async def serve(args):
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

    if args.sqlite:
        from mongoeco.engines.sqlite import SQLiteEngine

        server = AsyncMongoEcoProxyServer(
            engine=SQLiteEngine(args.sqlite), host=HOST, port=args.port
        )
    else:
        server = AsyncMongoEcoProxyServer(host=HOST, port=args.port)
    await server.start()
    sys.stderr.write("polymongo-testkit: mongoeco listening on %s:%d\n" % (HOST, args.port))
    sys.stderr.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sqlite", default=None, help="SQLite file (data survives restarts)")
    args = parser.parse_args()
    check_version()
    apply_patches()
    asyncio.run(self_test())
    if args.self_test:
        print("ok")
        return 0
    start_parent_watchdog()
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
