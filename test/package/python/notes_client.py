"""A Python grpcio client of the README's Notes service: twokey certificate over mTLS, bearer token in metadata.

Usage: notes_client.py CONFIG.json, where CONFIG names the server address and, per case, the
certificate files and token to call with. Prints one JSON line per case: its name, the gRPC
status code name and, when OK, the decoded Note. No generated code: the request and response
are encoded by hand (protobuf wire format: field 1 id, 2 owner, 3 text, all strings).
"""
import json
import sys

import grpc


def encode_get_note(note_id: str) -> bytes:
    data = note_id.encode("utf-8")
    return b"\x0a" + varint(len(data)) + data


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode_note(data: bytes) -> dict:
    names = {1: "id", 2: "owner", 3: "text"}
    note, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire != 2:
            raise ValueError(f"unexpected wire type {wire} for field {field}")
        length, i = read_varint(data, i)
        note[names.get(field, str(field))] = data[i : i + length].decode("utf-8")
        i += length
    return note


def read_varint(data: bytes, i: int):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def read(path):
    with open(path, "rb") as f:
        return f.read()


def call(address: str, case: dict) -> dict:
    bundle = read(case["bundle"])
    if case.get("chain"):
        creds = grpc.ssl_channel_credentials(root_certificates=bundle, private_key=read(case["key"]), certificate_chain=read(case["chain"]))
    else:
        creds = grpc.ssl_channel_credentials(root_certificates=bundle)
    metadata = [("authorization", "Bearer " + case["token"])] if case.get("token") else []
    with grpc.secure_channel(address, creds) as channel:
        # No serializers: the stub sends and returns raw bytes.
        get_note = channel.unary_unary("/acme.notes.v1.Notes/GetNote")
        try:
            reply = get_note(encode_get_note(case["id"]), metadata=metadata, timeout=10)
            return {"case": case["name"], "code": "OK", "note": decode_note(reply)}
        except grpc.RpcError as err:
            return {"case": case["name"], "code": err.code().name, "details": err.details()}


def main() -> None:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    for case in config["cases"]:
        print(json.dumps(call(config["address"], case)), flush=True)


if __name__ == "__main__":
    main()
