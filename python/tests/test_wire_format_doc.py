"""docs/wire_format.md and docs/datasystem.md checked against the code: every
message type id in src/common/wire/msg_types.h is documented under its own
name and id, no documented id is missing from the code, the status codes
listed for the header are exactly include/tqds/status.h's, every datasystem
body field that protocol.h names is one the datasystem table mentions, and
every field name the controller and storage-unit codecs write or read is in
wire_format.md. Pure text: no process, no build."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = ("kCtl", "kUnit", "kDs")  # the enum's names: prefix + the documented name


def code_types() -> dict[int, str]:
    text = (ROOT / "src/common/wire/msg_types.h").read_text()
    out = {}
    for name, value in re.findall(r"^\s*(k\w+) = (\d+),", text, re.M):
        if name in ("kInvalid", "kError", "kDsFirst", "kDsLast"):
            continue
        bare = next((name[len(p):] for p in PREFIXES if name.startswith(p)), None)
        assert bare, f"msg_types.h: {name} has none of the prefixes {PREFIXES}"
        if name.startswith("kUnit"):
            bare = "Unit" + bare  # the storage unit's rows keep the prefix
        assert int(value) not in out, f"msg_types.h: id {value} given twice"
        out[int(value)] = bare
    return out


def doc_rows(path: str) -> dict[int, set[str]]:
    """id -> names of the table rows `| id | Name | ...` of a message table."""
    rows: dict[int, set[str]] = {}
    for line in (ROOT / path).read_text().splitlines():
        m = re.match(r"^\| (\d+) \| (\w+)[ ,|]", line)
        if m:
            rows.setdefault(int(m.group(1)), set()).add(m.group(2))
    return rows


def test_every_message_type_is_documented_under_its_name():
    types = code_types()
    docs = doc_rows("docs/wire_format.md")
    for ident, names in doc_rows("docs/datasystem.md").items():
        if ident >= 100:
            docs.setdefault(ident, set()).update(names)
    docs.pop(0, None)  # the frame table of wire_format.md: frame 0 is the header
    missing = {i: n for i, n in types.items() if n not in docs.get(i, set())}
    assert not missing, f"in msg_types.h but not documented (id: name): {missing}"
    unknown = {i: n for i, n in docs.items() if i not in types}
    assert not unknown, f"documented but not in msg_types.h: {unknown}"
    renamed = {i: (types[i], n) for i, n in docs.items() if types[i] not in n}
    assert not renamed, f"documented under another name (code, docs): {renamed}"


def test_the_header_lists_exactly_the_status_codes():
    status = (ROOT / "include/tqds/status.h").read_text()
    enum = status[status.index("enum class StatusCode"):]
    enum = enum[: enum.index("};")]
    codes = {int(v): n for n, v in re.findall(r"^\s*k(\w+) = (\d+),", enum, re.M)}
    doc = (ROOT / "docs/wire_format.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| status_code |"))
    listed = {int(v): n for v, n in re.findall(r"(\d+) (\w+)", row.split("tqds::StatusCode", 1)[1])}
    listed[0] = "Ok"
    assert listed == codes, f"status codes in the docs {listed} and in status.h {codes}"


def test_every_datasystem_field_name_is_documented():
    proto = (ROOT / "src/datasystem/protocol.h").read_text()
    fields = set(re.findall(r'inline constexpr const char\* k\w+ = "(\w+)";', proto))
    assert len(fields) > 20
    ds = (ROOT / "docs/datasystem.md").read_text()
    table = "\n".join(line for line in ds.splitlines() if re.match(r"^\| 1\d\d \|", line))
    missing = sorted(f for f in fields if not re.search(rf"\b{f}\b", table))
    assert not missing, f"datasystem fields in protocol.h that docs/datasystem.md's message table never names: {missing}"


QUEUE_CODECS = ("protocol.cc", "kv_protocol.cc", "ctl_messages.cc", "simple_codec.cc")


def test_every_controller_field_name_is_documented():
    fields = set()
    for name in QUEUE_CODECS:
        text = (ROOT / "src/queue" / name).read_text()
        fields |= set(re.findall(r'pk\.pack\("([a-z_]+)"\)', text))  # written
        fields |= set(re.findall(r'\b(?:Get|GetOr|Has|Find)\b[^(;]*\("([a-z_]+)"', text))  # read
    assert len(fields) > 30, sorted(fields)
    doc = (ROOT / "docs/wire_format.md").read_text()
    missing = sorted(f for f in fields if f'"{f}"' not in doc)
    assert not missing, f"fields the queue codecs use that docs/wire_format.md never names: {missing}"
