"""PUT /api/v1/ssl: NJet's add/del semantics, codes, messages and retained records.

Called by api.py. Recorded behaviour (shared/njet-contract README §3, §7):
* schema errors -> 400 code 3 "pos: <n>, <jsmn-style message>";
* lookup by listens[0] + serverNames[0] only, listen spelled exactly as GET shows it; the name
  exactly as in njet.conf (`*.w.test`, `.d.test` too), else through NJet's virtual-host
  matching on that listen (`x.w.test` -> the `*.w.test` block: wildcard-server-names.json);
* add: code 11 when the body repeats the block's FIRST dynamic cert, cert_type (default rsa)
  must match the certificate, key/cert mismatch code 4; success appends a GET entry, publishes
  the body retained on /ins/ssl/l_<crc32(names+listens+cert_type)> and replaces that key
  type's served cert; a path the `nobody` worker cannot read breaks the block instead and the
  worker empties the record;
* del: code 0 only for the first dynamic cert (empties the record, nothing else changes),
  code 11 otherwise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from njetsim.certs import CertLoadError, load_pair, worker_can_read
from njetsim.context import Reply, SimContext, ok
from njetsim.jsonpos import JsonPosError, Node, parse

_STR = "string"


@dataclass(frozen=True)
class SslBody:
    listens: list[str]
    names: list[str]
    type: str
    cert_type: str
    certificate: str
    key: str


def _check_strings(node: Node, field: str) -> list[str]:
    if node.kind != "array":
        raise JsonPosError(node.start, f"Expected array in '{field}'")
    for item in node.value:
        if item.kind != _STR:
            raise JsonPosError(item.start, f"Expected string in '{field}'")
    return [item.value for item in node.value]


def _check_enum(node: Node, field: str, allowed: tuple[str, ...]) -> str:
    if node.kind != _STR:
        raise JsonPosError(node.start, f"Expected string in '{field}'")
    if node.value not in allowed:
        raise JsonPosError(node.start, f"Unknown enum value in '{field}': {node.value}")
    return str(node.value)


def _check_string(node: Node, field: str) -> str:
    if node.kind != _STR:
        raise JsonPosError(node.start, f"Expected string in '{field}'")
    return str(node.value)


def _missing(node: Node, where: str, required: tuple[str, ...]) -> None:
    for name in required:
        if name not in node.value:
            raise JsonPosError(node.start, f"Missing required field in '{where}': {name}")


def validate(root: Node) -> SslBody:
    """The body, or JsonPosError with NJet's position and message."""
    if root.kind != "object":
        raise JsonPosError(root.start, "Expected object in 'document root'")
    fields: dict[str, object] = {"cert_type": "rsa"}
    for key, node in root.value.items():
        if key in ("listens", "serverNames"):
            fields[key] = _check_strings(node, key)
        elif key == "type":
            fields[key] = _check_enum(node, key, ("add", "del"))
        elif key == "cert_info":
            if node.kind != "object":
                raise JsonPosError(node.start, "Expected object in 'cert_info'")
            for ckey, cnode in node.value.items():
                if ckey == "cert_type":
                    fields[ckey] = _check_enum(cnode, ckey, ("rsa", "ecc"))
                elif ckey in ("certificate", "certificateKey"):
                    fields[ckey] = _check_string(cnode, ckey)
            _missing(node, "cert_info", ("certificate", "certificateKey"))
    _missing(root, "document root", ("listens", "serverNames", "type", "cert_info"))
    return SslBody(fields["listens"], fields["serverNames"], str(fields["type"]),  # type: ignore[arg-type]
                   str(fields["cert_type"]), str(fields["certificate"]),
                   str(fields["certificateKey"]))


def record_topic(listens: list[str], names: list[str], cert_type: str) -> str:
    return f"/ins/ssl/l_{zlib.crc32((''.join(names) + ''.join(listens) + cert_type).encode())}"


def _fail(listen: str, name: str, reason: str, *, code: int = 4,
          msg: str = " dyn ssl update fail") -> Reply:
    return Reply(200, {"data": [f" listen[{listen}] server_name[{name}]{reason}"], "code": code,
                       "msg": msg})


async def put_ssl(sim: SimContext, raw: bytes) -> Reply:
    try:
        body = validate(parse(raw.decode("utf-8", errors="replace")))
    except JsonPosError as exc:
        return Reply(400, {"code": 3, "msg": str(exc)})
    injected = sim.faults.take_put_ssl()
    if injected is not None:
        return injected
    listen = body.listens[0] if body.listens else ""
    name = body.names[0] if body.names else ""
    block = sim.runtime.resolve(listen, name)
    if block is None:
        return Reply(200, {"data": [f" can`t find server by listen[{listen}] "
                                    f"server_name[{name}]"],
                           "code": 4, "msg": " dyn ssl update fail"})
    entry = {"cert_type": body.cert_type, "certificate": body.certificate,
             "certificateKey": body.key}
    topic = record_topic(body.listens, body.names, body.cert_type)
    first = block.first_dynamic()
    if body.type == "del":
        if first != entry:
            return _fail(listen, name, "dyn ssl, cert is not exist", code=11,
                         msg=" delete ssl cert fail")
        await sim.broker.clear_record(topic)
        return ok()
    if first == entry:
        return Reply(200, {"code": 11, "msg": " dyn ssl cert repeated"})
    try:
        loaded = load_pair(body.certificate, body.key, expect_type=body.cert_type)
    except CertLoadError as exc:
        if exc.kind == "type":
            return Reply(200, {"code": 4, "msg": " dyn ssl update fail"})
        return _fail(listen, name, " njt_ssl_certificate error")
    block.entries.append(entry)
    await sim.broker.set_record(topic, raw)
    # The worker (`nobody`) applies the same body on its own.
    if sim.faults.take_not_served() or not block.in_worker:
        return ok()
    if worker_can_read(body.certificate) and worker_can_read(body.key):
        sim.runtime.serve(block, loaded)
    else:
        block.broken = True
        sim.later(sim.broker.clear_record(topic))
    return ok()
