"""Checkpoints of a running TransferQueue: the controller's metadata and the
stored data of every produced sample, in one directory.

Layout of a checkpoint directory:

* ``controller.snapshot``: the controller's whole metadata state as the
  controller encodes it (``Client.snapshot_controller``; format in
  docs/wire_format.md): partitions, samples with global index and
  generation, field records, custom meta, keys, per-task consumption and the
  free-index pool.
* ``data/<n>.pt`` (when the storage was saved): for partition number ``n``
  (the order of ``partitions.json``), a ``torch.save`` of a list of
  ``{"field": name, "global_indexes": [...], "generations": [...], "data":
  TensorDict}``, one entry
  per field, holding that field of every visible sample that produced it.
* ``partitions.json``: the partition names, in the order of the data files.
* ``metadata.json``: ``{"format", "version", "time", "storage_saved",
  "user_metadata"}``.

A save writes into ``<dir>.tmp`` and renames it over ``<dir>`` (the previous
checkpoint is moved to ``<dir>.old`` and deleted only after the new one is in
place), so a crash leaves either the old or the new checkpoint.

A load replaces the controller's state, as upstream's does. With storage
saved, the current partitions' data is freed first and every saved field is
written back into the restored samples (same global indexes and
generations). The snapshot is checked by the controller (a dry run) before
anything is freed, so a corrupt checkpoint raises and changes nothing.

The ``data`` files are pickles (``torch.load(weights_only=False)``): load
only checkpoints you trust, as with upstream's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMAT = "tqds-checkpoint"
VERSION = 1
CONTROLLER_FILE = "controller.snapshot"
METADATA_FILE = "metadata.json"
PARTITIONS_FILE = "partitions.json"
DATA_DIR = "data"

_TASK = "__tqds_checkpoint__"  # force_fetch reads mark nothing; the name is only required


def _visible_meta(native_client: Any, partition: str, field: str | None):
    """Native BatchMeta of the visible samples of ``partition``: every one
    (``field`` None, ascending index) or those that produced ``field``
    (allocation order). Neither marks anything consumed."""
    if field is None:
        return native_client.get_meta([], 0, partition, _TASK, None, "force_fetch_all", 0.0)
    return native_client.get_meta([field], 0, partition, _TASK, None, "force_fetch", 0.0)


def _save_partition_data(client: Any, partition: str) -> list:
    native = client._client
    every = _visible_meta(native, partition, None)
    if len(every) == 0:
        return []
    fields = list(native.get_custom_meta(partition, list(every.global_indexes)).field_names)
    entries = []
    for field in fields:
        meta = _visible_meta(native, partition, field)
        if len(meta) == 0:
            continue
        td = client.get_data(meta, writable=True)
        entries.append({"field": field, "global_indexes": list(meta.global_indexes),
                        "generations": list(meta.generations), "data": td})
    return entries


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Makes the entries of directory ``path`` (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(client: Any, checkpoint_dir: Any, *, include_storage: bool, metadata: dict | None) -> None:
    import torch

    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    checkpoint_dir = Path(checkpoint_dir)
    tmp_dir = checkpoint_dir.parent / f"{checkpoint_dir.name}.tmp"
    old_dir = checkpoint_dir.parent / f"{checkpoint_dir.name}.old"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    try:
        snapshot = client._client.snapshot_controller()
        with open(tmp_dir / CONTROLLER_FILE, "wb") as f:
            f.write(snapshot)
            f.flush()
            os.fsync(f.fileno())
        # The data is read after the snapshot: partitions (and samples) that
        # appear in between are simply not in it; the snapshot's own
        # partitions are what load restores.
        partitions = list(client._client.list_partitions())
        if include_storage:
            (tmp_dir / DATA_DIR).mkdir()
            for n, partition in enumerate(partitions):
                path = tmp_dir / DATA_DIR / f"{n}.pt"
                torch.save(_save_partition_data(client, partition), path)
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
            _fsync_dir(tmp_dir / DATA_DIR)
        _write_json(tmp_dir / PARTITIONS_FILE, partitions)
        _write_json(tmp_dir / METADATA_FILE, {
            "format": FORMAT,
            "version": VERSION,
            "time": time.time(),
            "storage_saved": bool(include_storage),
            "user_metadata": metadata or {},
        })
        _fsync_dir(tmp_dir)
        # From here a crash leaves <dir> (old or new, whole) or, between the
        # two renames, only <dir>.old, which a load takes as the checkpoint.
        if checkpoint_dir.exists():
            if old_dir.exists():
                shutil.rmtree(old_dir)
            checkpoint_dir.rename(old_dir)
        tmp_dir.rename(checkpoint_dir)
        _fsync_dir(checkpoint_dir.parent)
        if old_dir.exists():
            shutil.rmtree(old_dir)
    except BaseException:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if old_dir.exists() and not checkpoint_dir.exists():
            old_dir.rename(checkpoint_dir)
        raise


def _read_checkpoint(checkpoint_dir: Path):
    old_dir = checkpoint_dir.parent / f"{checkpoint_dir.name}.old"
    if not checkpoint_dir.exists() and old_dir.exists():
        # A save crashed between moving the old checkpoint aside and
        # installing the new one: the old one is the checkpoint.
        old_dir.rename(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {checkpoint_dir}")
    for name in (METADATA_FILE, CONTROLLER_FILE):
        if not (checkpoint_dir / name).is_file():
            raise FileNotFoundError(f"{name} not found in checkpoint {checkpoint_dir}")
    try:
        with open(checkpoint_dir / METADATA_FILE) as f:
            info = json.load(f)
    except ValueError as e:
        raise RuntimeError(f"checkpoint {checkpoint_dir}: {METADATA_FILE} is not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise RuntimeError(f"checkpoint {checkpoint_dir}: {METADATA_FILE} is not a {FORMAT} description")
    if info.get("version") != VERSION:
        raise RuntimeError(f"checkpoint {checkpoint_dir}: version {info.get('version')!r} is not supported "
                           f"(this package reads {VERSION})")
    snapshot = (checkpoint_dir / CONTROLLER_FILE).read_bytes()
    data = []
    if info.get("storage_saved"):
        import torch

        path = checkpoint_dir / PARTITIONS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{PARTITIONS_FILE} not found in checkpoint {checkpoint_dir}")
        with open(path) as f:
            partitions = json.load(f)
        if not isinstance(partitions, list) or not all(isinstance(p, str) for p in partitions):
            raise RuntimeError(f"checkpoint {checkpoint_dir}: {PARTITIONS_FILE} must be a list of names")
        for n, partition in enumerate(partitions):
            path = checkpoint_dir / DATA_DIR / f"{n}.pt"
            if not path.is_file():
                raise FileNotFoundError(f"{DATA_DIR}/{n}.pt (partition {partition!r}) not found in {checkpoint_dir}")
            try:
                entries = torch.load(path, weights_only=False)
            except Exception as e:
                raise RuntimeError(f"checkpoint {checkpoint_dir}: cannot read {DATA_DIR}/{n}.pt ({e})") from None
            if not isinstance(entries, list) or not all(
                    isinstance(e, dict) and {"field", "global_indexes", "data"} <= e.keys() for e in entries):
                raise RuntimeError(f"checkpoint {checkpoint_dir}: {DATA_DIR}/{n}.pt is not a list of field entries")
            data.append((partition, entries))
    return info, snapshot, data


def load(client: Any, checkpoint_dir: Any) -> dict:
    """Restores a checkpoint; returns its metadata.json content."""
    from .client import InvalidArgumentError

    info, snapshot, data = _read_checkpoint(Path(checkpoint_dir))
    native = client._client
    try:
        native.restore_controller(snapshot, dry_run=True)
    except InvalidArgumentError as e:
        raise RuntimeError(f"checkpoint {checkpoint_dir}: the controller refused its snapshot: {e}") from None
    if info.get("storage_saved"):
        # The restored state replaces this one: free what it stores first.
        for partition in native.list_partitions():
            native.clear_partition(partition)
    native.restore_controller(snapshot)
    restored = set(native.list_partitions())
    for partition, entries in data:
        if partition not in restored:
            continue  # made between the snapshot and the data read: not in the checkpoint
        for entry in entries:
            _put_back(client, partition, entry)
    return info


def _put_back(client: Any, partition: str, entry: dict) -> None:
    """Writes one saved field into the restored samples that produced it.
    Samples are matched by (global index, generation): a producer running
    during the save can make the data read after the snapshot hold samples
    the snapshot lacks (left out here) or lack ones it has (warned)."""
    from .metadata import BatchMeta

    field = entry["field"]
    meta = BatchMeta._from_native(_visible_meta(client._client, partition, field))
    saved = list(zip(entry["global_indexes"], entry.get("generations") or [None] * len(entry["global_indexes"])))
    if [(i, g) for i, g in zip(meta.global_indexes, meta.generations)] == saved:
        client.put(entry["data"], metadata=meta)
        return
    row_of = {key: row for row, key in enumerate(saved)}
    positions, rows = [], []
    for pos, (i, g) in enumerate(zip(meta.global_indexes, meta.generations)):
        row = row_of.get((i, g))
        if row is not None:
            positions.append(pos)
            rows.append(row)
    missing = len(meta) - len(positions)
    if missing:
        logger.warning("load_checkpoint: field %r of %d sample(s) of partition %r was produced after the "
                       "snapshot's data was read; it is not in the checkpoint", field, missing, partition)
    if rows:
        client.put(entry["data"][rows], metadata=meta.select_samples(positions))
