"""A Python gRPC server behind nginx or Envoy and the twokey authorizer, with no twokey code inside.

The proxy lets a call through only when twokey's decision allowed it, and then sets the
x-twokey-* headers from that decision (replacing whatever the client sent). The server trusts
those headers, and only those, and does the one check the authorizer cannot: whether the caller
may see this note (its owner, or a token holding "notes:read:any"). A note that is missing and a
note that belongs to someone else get the same answer, so a caller cannot learn which ids exist.

Runs on Debian's python3-grpcio alone: messages are encoded by hand (no generated code).
Usage: python3 notes_server.py --port PORT [--count-file FILE]
"""
import argparse
import json
from concurrent import futures

import grpc

NOTES = {"n1": ("alice", "alice's first note"), "n2": ("bob", "bob's note")}

# Headers the proxy sets from the authorizer's answer: the only identity this server trusts.
SUBJECT, SCOPES, PEER, DECISION = "x-twokey-subject", "x-twokey-scopes", "x-twokey-peer", "x-twokey-decision-id"


def field(number, text):
    data = text.encode("utf-8")
    out, size = bytearray([number << 3 | 2]), len(data)
    while size > 0x7F:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + data


def read_id(message):
    """Field 1 (string) of GetNoteRequest; other fields are skipped."""
    i = 0
    while i < len(message):
        key, i = varint(message, i)
        if key & 7 == 2:
            size, i = varint(message, i)
            if key >> 3 == 1:
                return message[i : i + size].decode("utf-8")
            i += size
        elif key & 7 == 0:
            _, i = varint(message, i)
        else:
            raise ValueError("unexpected wire type")
    return ""


def varint(data, i):
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


class Notes:
    def __init__(self, count_file):
        self.count_file = count_file

    def get(self, request, context):
        if self.count_file:
            with open(self.count_file, "a") as f:
                f.write("Get\n")
        # For the tests: every identity-looking header that arrived, all of its values.
        seen = {}
        for key, value in context.invocation_metadata():
            if key.startswith(("x-twokey-", "x-client-", "x-original-", "x-forwarded-")):
                seen.setdefault(key, []).append(value)
        headers = dict(context.invocation_metadata())
        subject = headers.get(SUBJECT, "")
        scopes = headers.get(SCOPES, "").split()
        note_id = read_id(request)
        note = NOTES.get(note_id)
        # The resource check: the owner, or a holder of the ':any' scope. Missing and foreign
        # notes get the same status and message.
        if note is None or (note[0] != subject and "notes:read:any" not in scopes):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "note %s: not found or not yours" % note_id)
        owner, text = note
        return field(1, note_id) + field(2, owner) + field(3, text) + field(4, json.dumps(seen, sort_keys=True))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count-file")
    args = parser.parse_args()
    notes = Notes(args.count_file)
    handler = grpc.method_handlers_generic_handler(
        "demo.notes.v1.Notes",
        {"Get": grpc.unary_unary_rpc_method_handler(notes.get)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    # Plaintext on loopback: only the proxy beside it can connect.
    server.add_insecure_port("127.0.0.1:%d" % args.port)
    server.start()
    print("notes serving on 127.0.0.1:%d" % args.port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
