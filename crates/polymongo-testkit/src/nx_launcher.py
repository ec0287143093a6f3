"""polymongo-testkit launcher for nx-27017 0.8.1.

Embedded in the Rust crate (include_str!) and written next to the cached
virtual environment. It patches nx-27017's change streams: patches 1 and 2
fix wire types that make the Rust `mongodb` driver reject every change-stream
reply; patches 3 and 4 make event documents carry the same BSON values a
``find`` returns. Then it runs nx-27017's own ``main()`` in this process (no
fork, so the pid the test kit spawned is the server's pid).

Patches (module ``nx_27017.changestream``):

1. ``ChangeStreamCursor.__init__``: the cursor id (``self._id``, from a counter
   starting at 1000) is encoded by pymongo's bson as Int32 because it is small;
   the driver requires ``cursor.id`` to be Int64. We store it as
   ``bson.int64.Int64`` (an ``int`` subclass, so dict lookups by plain ints in
   getMore/killCursors still find it).
2. ``ChangeStreamManager._translate_row``: events carry ``clusterTime`` as a
   datetime; the driver requires a BSON Timestamp. We replace it by
   ``Timestamp(<seconds of that datetime>, <increment>)`` with a process-wide
   increasing increment. ``wallTime`` stays a date, as in MongoDB.
3. Same function: ``fullDocument`` is decoded with plain ``json.loads``, so
   ObjectId, Date and Binary values arrive as NeoSQLite's storage encoding
   (``{"__neosqlite_objectid__": true, "id": "..."}``, ``{"$date": "..."}``,
   ``{"__neosqlite_binary__": true, ...}``) instead of BSON values; a typed
   ``ChangeStreamEvent<T>`` with an ObjectId ``_id`` cannot decode it. We
   decode it again with NeoSQLite's own ``neosqlite_json_loads`` (the decoder
   its reads use), so events carry the same values ``find`` returns.
4. Same function: ``documentKey._id`` is the changelog's text column (Int32 1
   arrives as the string "1"); when the event has a ``fullDocument`` (inserts,
   updates and, in nx, deletes) we take ``_id`` from it instead.

If either target is missing, or the self-test below finds the patched output
wrong, the launcher exits with status 3 and a message: an nx-27017 upgrade must
not silently drop the patches.

Usage:
    python -I -u nx_launcher.py --self-test     # patch, verify, print "ok"
    python -I -u nx_launcher.py [nx-27017 args]  # patch, then run nx-27017

While serving, a watchdog thread ends the process if its parent (the test
process) dies without stopping it, so killed test runs leave no servers behind.
"""

import itertools
import json
import os
import sys
import threading
import time

PATCH_EXIT_STATUS = 3
EXPECTED_NX_VERSION = "0.8.1"


def _fail(message):
    sys.stderr.write("polymongo-testkit launcher: " + message + "\n")
    sys.stderr.flush()
    sys.exit(PATCH_EXIT_STATUS)


def apply_patches():
    try:
        from bson.int64 import Int64
        from bson.timestamp import Timestamp
        from neosqlite.collection.json_helpers import neosqlite_json_loads
        from nx_27017 import changestream
    except ImportError as exc:
        _fail("cannot import nx_27017.changestream / neosqlite json_helpers / bson: %s" % exc)

    cursor_cls = getattr(changestream, "ChangeStreamCursor", None)
    manager_cls = getattr(changestream, "ChangeStreamManager", None)
    if cursor_cls is None or not callable(getattr(cursor_cls, "__init__", None)):
        _fail("nx_27017.changestream.ChangeStreamCursor not found; the cursor-id patch cannot apply")
    if manager_cls is None or not callable(getattr(manager_cls, "_translate_row", None)):
        _fail(
            "nx_27017.changestream.ChangeStreamManager._translate_row not found; "
            "the clusterTime patch cannot apply"
        )

    original_init = cursor_cls.__init__

    def patched_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._id = Int64(self._id)

    cursor_cls.__init__ = patched_init

    original_translate = manager_cls._translate_row
    increments = itertools.count(1)

    def patched_translate(self, stream, rowid, row):
        event = original_translate(self, stream, rowid, row)
        if not isinstance(event, dict):
            return event
        if "clusterTime" in event:  # patch 2
            when = event["clusterTime"]
            seconds = int(when.timestamp()) if hasattr(when, "timestamp") else int(time.time())
            event["clusterTime"] = Timestamp(seconds, next(increments) % 0xFFFFFFFF + 1)
        full = event.get("fullDocument")
        if isinstance(full, dict):
            full = neosqlite_json_loads(json.dumps(full))  # patch 3
            event["fullDocument"] = full
            if "_id" in full:  # patch 4
                event["documentKey"] = {"_id": full["_id"]}
        return event

    manager_cls._translate_row = patched_translate
    return changestream, Int64, Timestamp


def self_test(changestream, Int64, Timestamp):
    """Exercise both patched functions without a database."""
    try:
        cursor = changestream.ChangeStreamCursor("c", [])
        if not isinstance(cursor._id, Int64):
            _fail("cursor id patch ineffective: %r" % type(cursor._id))
        data = '{"_id":{"__neosqlite_objectid__":true,"id":"6b06d43cf1420969acc35884"},"n":1}'
        row = (1, "insert", "6b06d43cf1420969acc35884", data, None)
        event = changestream.ChangeStreamManager()._translate_row(cursor, 1, row)
    except SystemExit:
        raise
    except Exception as exc:  # an nx upgrade changed the signatures
        _fail("self-test of the patched change-stream functions failed: %r" % (exc,))
    if not isinstance(event, dict) or not isinstance(event.get("clusterTime"), Timestamp):
        _fail("clusterTime patch ineffective: %r" % (event,))
    oid = event.get("fullDocument", {}).get("_id")
    if type(oid).__name__ != "ObjectId" or str(oid) != "6b06d43cf1420969acc35884":
        _fail("fullDocument patch ineffective: %r" % (event,))
    if event.get("documentKey") != {"_id": oid}:
        _fail("documentKey patch ineffective: %r" % (event,))


def check_version():
    try:
        from importlib.metadata import version

        found = version("nx-27017")
    except Exception as exc:
        found = "unknown (%s)" % exc
    if found != EXPECTED_NX_VERSION:
        sys.stderr.write(
            "polymongo-testkit launcher: warning: written for nx-27017 %s, found %s\n"
            % (EXPECTED_NX_VERSION, found)
        )


def start_parent_watchdog():
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="polymongo-parent-watchdog", daemon=True).start()


def main():
    check_version()
    patched = apply_patches()
    self_test(*patched)
    if sys.argv[1:] == ["--self-test"]:
        print("ok")
        return 0
    start_parent_watchdog()
    from nx_27017.nx_27017 import main as nx_main

    sys.argv = ["nx_27017"] + sys.argv[1:]
    result = nx_main()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
