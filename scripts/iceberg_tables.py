#!/usr/bin/env python3
"""Write real Apache Iceberg tables shaped like vendors' "Iceberg topics".

Kafka-compatible brokers can keep a topic as an Iceberg table.  This script
writes such tables with pyiceberg (no broker needed), in the column layout of
one of three vendors, so that Kappa's replay layout can be tested against real
Iceberg metadata, manifests and Parquet files.

Install:
    python3 -m pip install 'pyiceberg[pyarrow,sql-sqlite]'

Usage:
    python3 scripts/iceberg_tables.py \
        --warehouse URI --table NAMESPACE.NAME \
        --vendor {redpanda,automq,aiven} --records FILE.jsonl \
        [--catalog-db PATH] [--commits N] [--mode {raw,structured}] \
        [--property KEY=VALUE ...] [--delete-offsets P:O,P:O] \
        [--file-per-partition] [--page-checksums]

  --warehouse     file:///abs/dir  or  s3://bucket/prefix.  For s3 the
                  connection comes from the environment: AWS_ENDPOINT
                  (e.g. http://127.0.0.1:9000), AWS_ACCESS_KEY_ID,
                  AWS_SECRET_ACCESS_KEY, AWS_REGION (default us-east-1).
                  The bucket is created if it is missing.
  --catalog-db    SQLite file of pyiceberg's SqlCatalog.  Default: for file://
                  the file <warehouse dir>.catalog.db next to the warehouse;
                  for s3 a temporary file, deleted at exit (so pass
                  --catalog-db to add to an s3 table in a later run).
                  The namespace is created if missing; an existing table is
                  appended to.
  --records       JSON lines, one Kafka record each:
                    {"partition": 0, "offset": 7, "timestamp_ms": 1700000000000,
                     "key": "<base64>"|null, "value": "<base64>"|null,
                     "headers": [{"key": "h", "value": "<base64>"|null}]}
                  ("headers" may be absent).
  --commits N     split the records, in file order, into N contiguous chunks
                  and append each as its own snapshot (default 1).
  --mode          raw (default): the vendor's raw layout, value as bytes.
                  structured: the value column is replaced by a struct
                  `value` {text: string} holding the value decoded as UTF-8,
                  i.e. a lossy, schema-decoded table a replayer must refuse.
  --property      table property set when the table is created (repeatable),
                  e.g. automq.table.topic.upsert.enable=true
  --delete-offsets  after appending, delete these (partition, offset) rows
                  with table.delete(), which commits a delete/overwrite
                  snapshot (mimics upsert/compaction reshaping the history).

  --file-per-partition  within each commit chunk, append each Kafka partition's
                  records on their own (a snapshot and a data file each), as
                  brokers that translate partition by partition write them.
  --page-checksums  write a CRC on every Parquet page (pyarrow's
                  write_page_checksum; parquet-java's default), so a damaged
                  byte is caught when the file is read.

Prints one JSON line on stdout:
    {"location": ..., "metadata_location": ..., "snapshot_id": ...}

Example:
    printf '%s\n' '{"partition":0,"offset":0,"timestamp_ms":1700000000000,"key":null,"value":"aGk="}' > /tmp/r.jsonl
    python3 scripts/iceberg_tables.py --warehouse file:///tmp/wh --table kafka.orders \
        --vendor redpanda --records /tmp/r.jsonl

Vendor layouts (column order as each vendor declares it; pyiceberg assigns
fresh field ids in that order on create_table):

  redpanda  (Redpanda `key_value` mode; src/v/datalake/table_definition.h,
            record_translator.cc; docs "Specify Iceberg Schema")
      redpanda struct<partition int, offset long, timestamp timestamptz(us),
                      headers list<struct<key string, value binary>>,
                      key binary, timestamp_type int>
      value binary
      partitioned by hour(redpanda.timestamp); all fields optional; an empty
      header list is written as null; timestamp_type is Kafka's id (0 create
      time, 1 log append time) -- the input has none, so 0 is written.

  automq    (AutoMQ Table Topic, raw value; kafka/automq/table/process/
            RecordAssembler.java, DefaultRecordProcessor.java)
      _kafka_value binary, _kafka_header map<string, binary>,
      _kafka_key binary,
      _kafka_metadata struct<partition int, offset long, timestamp long(ms)>
      unpartitioned; headers are a map, so duplicate header keys collapse
      (last wins) and header order is not kept.

  aiven     (Aiven tiered-storage-for-apache-kafka, Iceberg mode;
            core/.../iceberg/data/RowSchema.java, RemoteStorageManager)
      kafka struct<partition int, offset long, timestamp long(ms),
                   batch_byte_offset int, batch_base_offset long,
                   batch_partition_leader_epoch int, batch_magic int,
                   batch_timestamp_type int, batch_compression_type int,
                   batch_max_timestamp long, batch_producer_id long,
                   batch_producer_epoch int, batch_base_sequence int>
      headers list<struct<key string, value binary>>
      key_raw binary, value_raw binary
      unpartitioned.  The batch_* fields describe the Kafka batch a record
      came in; the input has no batches, so each record is written as its own
      batch (base offset = offset, magic 2, no compression, no producer id).
      (Aiven's structured `key`/`value` columns only exist when keys/values
      are Avro from a schema registry; in raw mode they are left out.)

Notes:
  * Tables are Iceberg format v2 written by pyiceberg's SqlCatalog:
    <location>/metadata/NNNNN-<uuid>.metadata.json (no version-hint.text),
    manifest lists snap-<snapshot id>-0-<uuid>.avro, manifests
    <uuid>-m<i>.avro, and zstd Parquet data files carrying Iceberg field ids
    under <location>/data/ (Hive-style partition directories for redpanda).
  * pyiceberg computes partition values through the optional pyiceberg-core
    package; without it this script computes the hour transform with pyarrow.
  * On s3, small objects are written with one PutObject (see
    SinglePutS3FileIO), so moto 5.2.x works; objects above pyarrow's upload
    part size still use a multipart upload.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import os
import sys
import tempfile
from urllib.parse import urlparse

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, EqualTo, Or
from pyiceberg.io.pyarrow import PyArrowFileIO, schema_to_pyarrow
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import HourTransform
from pyiceberg.types import (
    BinaryType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)


def _hour_transform_without_pyiceberg_core() -> None:
    """Let pyiceberg write hour-partitioned data without pyiceberg-core.

    pyiceberg computes partition values of Arrow data through the optional
    Rust package pyiceberg-core.  When that is not installed, compute the hour
    transform (floor(micros / 3600e6) as int32) with pyarrow instead, so the
    plain 'pyiceberg[pyarrow,sql-sqlite]' install is enough for redpanda.
    """
    try:
        import pyiceberg_core  # noqa: F401

        return
    except ImportError:
        pass
    import pyarrow.compute as pc

    hour_us = 3_600_000_000

    def pyarrow_transform(self, source):
        if not isinstance(source, TimestamptzType):
            raise ValueError(f"hour fallback only handles timestamptz, not {source}")

        def hours(arr):
            if isinstance(arr, pa.ChunkedArray):
                return pa.chunked_array([hours(c) for c in arr.iterchunks()], type=pa.int32())
            us = arr.cast(pa.int64())
            q = pc.divide(us, hour_us)  # truncates toward zero
            floor = pc.if_else(pc.less(us, pc.multiply(q, hour_us)), pc.subtract(q, 1), q)
            return floor.cast(pa.int32())

        return hours

    HourTransform.pyarrow_transform = pyarrow_transform


# --------------------------------------------------------------------------
# Schemas.  Ids here only need to be unique: create_table re-assigns fresh
# ids in declaration order (each struct's fields first, then their children).
# --------------------------------------------------------------------------

class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


def _text_value(ids: _Ids) -> StructType:
    """The structured (lossy) stand-in for a decoded value."""
    return StructType(NestedField(ids(), "text", StringType(), required=False))


def _header_list(ids: _Ids, required: bool) -> ListType:
    elem = StructType(
        NestedField(ids(), "key", StringType(), required=required),
        NestedField(ids(), "value", BinaryType(), required=False),
    )
    return ListType(ids(), elem, element_required=required)


def redpanda_schema(mode: str) -> tuple[Schema, PartitionSpec]:
    ids = _Ids()
    ts_id = 0
    rp_fields = []
    rp_fields.append(NestedField(ids(), "partition", IntegerType(), required=False))
    rp_fields.append(NestedField(ids(), "offset", LongType(), required=False))
    ts_id = ids()
    rp_fields.append(NestedField(ts_id, "timestamp", TimestamptzType(), required=False))
    rp_fields.append(NestedField(ids(), "headers", _header_list(ids, required=False), required=False))
    rp_fields.append(NestedField(ids(), "key", BinaryType(), required=False))
    rp_fields.append(NestedField(ids(), "timestamp_type", IntegerType(), required=False))
    fields = [NestedField(ids(), "redpanda", StructType(*rp_fields), required=False)]
    if mode == "raw":
        fields.append(NestedField(ids(), "value", BinaryType(), required=False))
    else:
        fields.append(NestedField(ids(), "value", _text_value(ids), required=False))
    spec = PartitionSpec(
        PartitionField(source_id=ts_id, field_id=1000, transform=HourTransform(), name="redpanda.timestamp_hour")
    )
    return Schema(*fields), spec


def automq_schema(mode: str) -> tuple[Schema, PartitionSpec]:
    ids = _Ids()
    fields = []
    if mode == "raw":
        fields.append(NestedField(ids(), "_kafka_value", BinaryType(), required=False))
    else:
        fields.append(NestedField(ids(), "value", _text_value(ids), required=False))
    # AutoMQ's Avro header schema is map<bytes> (values not nullable); the
    # value is optional here so a null header value can be written at all.
    header_map = MapType(ids(), StringType(), ids(), BinaryType(), value_required=False)
    fields.append(NestedField(ids(), "_kafka_header", header_map, required=False))
    fields.append(NestedField(ids(), "_kafka_key", BinaryType(), required=False))
    meta = StructType(
        NestedField(ids(), "partition", IntegerType(), required=True),
        NestedField(ids(), "offset", LongType(), required=True),
        NestedField(ids(), "timestamp", LongType(), required=True),
    )
    fields.append(NestedField(ids(), "_kafka_metadata", meta, required=False))
    return Schema(*fields), UNPARTITIONED_PARTITION_SPEC


AIVEN_KAFKA_FIELDS = [
    ("partition", IntegerType),
    ("offset", LongType),
    ("timestamp", LongType),
    ("batch_byte_offset", IntegerType),
    ("batch_base_offset", LongType),
    ("batch_partition_leader_epoch", IntegerType),
    ("batch_magic", IntegerType),
    ("batch_timestamp_type", IntegerType),
    ("batch_compression_type", IntegerType),
    ("batch_max_timestamp", LongType),
    ("batch_producer_id", LongType),
    ("batch_producer_epoch", IntegerType),
    ("batch_base_sequence", IntegerType),
]


def aiven_schema(mode: str) -> tuple[Schema, PartitionSpec]:
    ids = _Ids()
    kafka = StructType(*[NestedField(ids(), name, typ(), required=True) for name, typ in AIVEN_KAFKA_FIELDS])
    fields = [
        NestedField(ids(), "kafka", kafka, required=True),
        # Aiven's Avro header record has non-null key/value; value is optional
        # here so a null header value can be written.
        NestedField(ids(), "headers", _header_list(ids, required=True), required=True),
        NestedField(ids(), "key_raw", BinaryType(), required=False),
    ]
    if mode == "raw":
        fields.append(NestedField(ids(), "value_raw", BinaryType(), required=False))
    else:
        fields.append(NestedField(ids(), "value", _text_value(ids), required=False))
    return Schema(*fields), UNPARTITIONED_PARTITION_SPEC


SCHEMAS = {"redpanda": redpanda_schema, "automq": automq_schema, "aiven": aiven_schema}

# Where each vendor keeps partition and offset (for --delete-offsets).
PARTITION_OFFSET_COLUMNS = {
    "redpanda": ("redpanda.partition", "redpanda.offset"),
    "automq": ("_kafka_metadata.partition", "_kafka_metadata.offset"),
    "aiven": ("kafka.partition", "kafka.offset"),
}


# --------------------------------------------------------------------------
# Records -> rows
# --------------------------------------------------------------------------

def _b64(s: str | None) -> bytes | None:
    return None if s is None else base64.b64decode(s)


def _text(value: bytes | None) -> dict | None:
    return None if value is None else {"text": value.decode("utf-8", errors="replace")}


def load_records(path: str) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            try:
                records.append(
                    {
                        "partition": int(r["partition"]),
                        "offset": int(r["offset"]),
                        "timestamp_ms": int(r["timestamp_ms"]),
                        "key": _b64(r.get("key")),
                        "value": _b64(r.get("value")),
                        "headers": [(h["key"], _b64(h.get("value"))) for h in (r.get("headers") or [])],
                    }
                )
            except (KeyError, TypeError, ValueError) as e:
                sys.exit(f"{path}:{n}: bad record: {e}")
    return records


def redpanda_row(r: dict, mode: str) -> dict:
    headers = [{"key": k, "value": v} for k, v in r["headers"]]
    return {
        "redpanda": {
            "partition": r["partition"],
            "offset": r["offset"],
            "timestamp": r["timestamp_ms"] * 1000,  # timestamptz is microseconds
            "headers": headers or None,  # Redpanda writes no list for no headers
            "key": r["key"],
            "timestamp_type": 0,  # CreateTime
        },
        "value": r["value"] if mode == "raw" else _text(r["value"]),
    }


def automq_row(r: dict, mode: str) -> dict:
    header_map: dict[str, bytes | None] = {}
    for k, v in r["headers"]:
        header_map[k] = v  # a map: the last duplicate key wins
    row = {"_kafka_value": r["value"]} if mode == "raw" else {"value": _text(r["value"])}
    row["_kafka_header"] = list(header_map.items())
    row["_kafka_key"] = r["key"]
    row["_kafka_metadata"] = {"partition": r["partition"], "offset": r["offset"], "timestamp": r["timestamp_ms"]}
    return row


def aiven_row(r: dict, mode: str) -> dict:
    ts = r["timestamp_ms"]
    kafka = {
        "partition": r["partition"],
        "offset": r["offset"],
        "timestamp": ts,
        # One record per batch: the input carries no batch boundaries.
        "batch_byte_offset": 0,
        "batch_base_offset": r["offset"],
        "batch_partition_leader_epoch": 0,
        "batch_magic": 2,
        "batch_timestamp_type": 0,  # CreateTime
        "batch_compression_type": 0,  # none
        "batch_max_timestamp": ts,
        "batch_producer_id": -1,
        "batch_producer_epoch": -1,
        "batch_base_sequence": -1,
    }
    row = {
        "kafka": kafka,
        "headers": [{"key": k, "value": v} for k, v in r["headers"]],
        "key_raw": r["key"],
    }
    if mode == "raw":
        row["value_raw"] = r["value"]
    else:
        row["value"] = _text(r["value"])
    return row


ROWS = {"redpanda": redpanda_row, "automq": automq_row, "aiven": aiven_row}


# --------------------------------------------------------------------------
# Catalog and storage
# --------------------------------------------------------------------------

def s3_properties() -> dict[str, str]:
    props = {"s3.region": os.environ.get("AWS_REGION", "us-east-1")}
    env = {
        "s3.endpoint": "AWS_ENDPOINT",
        "s3.access-key-id": "AWS_ACCESS_KEY_ID",
        "s3.secret-access-key": "AWS_SECRET_ACCESS_KEY",
    }
    for prop, var in env.items():
        if os.environ.get(var):
            props[prop] = os.environ[var]
    return props


class SinglePutS3FileIO(PyArrowFileIO):
    """pyiceberg's PyArrowFileIO, with pyarrow's S3 `allow_delayed_open` on.

    With it, pyarrow writes an object smaller than one upload part (all of
    a test table's files) in a single PutObject instead of a multipart
    upload.  That is what makes writes work against moto 5.2.x, whose
    CompleteMultipartUpload reply has the wrong XML root element (getmoto/moto
    #10055) and is rejected by the AWS C++ SDK inside pyarrow.  pyiceberg has
    no property for the option, so the filesystem pyiceberg builds is rebuilt
    through its pickle form with that one option changed.
    """

    def _initialize_s3_fs(self, netloc):
        s3 = super()._initialize_s3_fs(netloc)
        rebuild, (options,) = s3.__reduce__()
        return rebuild({**options, "allow_delayed_open": True})


def ensure_bucket(bucket: str, props: dict[str, str]) -> None:
    """Create the bucket with pyarrow's S3 client if it does not exist."""
    from pyarrow import fs

    kwargs = {"region": props["s3.region"], "allow_bucket_creation": True}
    if "s3.access-key-id" in props:
        kwargs["access_key"] = props["s3.access-key-id"]
        kwargs["secret_key"] = props.get("s3.secret-access-key", "")
    if "s3.endpoint" in props:
        ep = urlparse(props["s3.endpoint"])
        kwargs["endpoint_override"] = ep.netloc or ep.path
        kwargs["scheme"] = ep.scheme or "https"
    s3 = fs.S3FileSystem(**kwargs)
    if s3.get_file_info(bucket).type == fs.FileType.NotFound:
        s3.create_dir(bucket)


def open_catalog(warehouse: str, catalog_db: str | None) -> SqlCatalog:
    url = urlparse(warehouse)
    props: dict[str, str] = {"warehouse": warehouse.rstrip("/")}
    if url.scheme == "file":
        os.makedirs(url.path, exist_ok=True)
        if catalog_db is None:
            catalog_db = url.path.rstrip("/") + ".catalog.db"
    elif url.scheme in ("s3", "s3a"):
        props.update(s3_properties())
        props["py-io-impl"] = f"{SinglePutS3FileIO.__module__}.{SinglePutS3FileIO.__name__}"
        ensure_bucket(url.netloc, props)
        if catalog_db is None:
            # Nothing could find this catalog again, so it goes at exit; the
            # printed metadata_location is what locates the table.
            fd, catalog_db = tempfile.mkstemp(prefix="iceberg-catalog-", suffix=".db")
            os.close(fd)
            atexit.register(os.remove, catalog_db)
    else:
        sys.exit(f"--warehouse must be file:///abs/dir or s3://bucket/prefix, not {warehouse!r}")
    props["uri"] = "sqlite:///" + os.path.abspath(catalog_db)
    return SqlCatalog("kappa", **props)


def load_or_create(catalog: SqlCatalog, ident: str, vendor: str, mode: str, properties: dict[str, str]):
    namespace = ident.rsplit(".", 1)[0]
    catalog.create_namespace_if_not_exists(namespace)
    try:
        table = catalog.load_table(ident)
        if properties:
            print(f"note: {ident} exists; --property is only applied at creation", file=sys.stderr)
        return table
    except NoSuchTableError:
        schema, spec = SCHEMAS[vendor](mode)
        return catalog.create_table(ident, schema=schema, partition_spec=spec, properties=properties)


def chunks(items: list, n: int) -> list[list]:
    """n contiguous chunks of (nearly) equal size, in order."""
    n = max(1, min(n, len(items))) if items else 1
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def delete_filter(vendor: str, pairs: list[tuple[int, int]]) -> BooleanExpression:
    pcol, ocol = PARTITION_OFFSET_COLUMNS[vendor]
    expr: BooleanExpression | None = None
    for p, o in pairs:
        term = And(EqualTo(pcol, p), EqualTo(ocol, o))
        expr = term if expr is None else Or(expr, term)
    return expr


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warehouse", required=True, help="file:///abs/dir or s3://bucket/prefix")
    ap.add_argument("--table", required=True, help="NAMESPACE.NAME")
    ap.add_argument("--vendor", required=True, choices=sorted(SCHEMAS))
    ap.add_argument("--records", required=True, help="JSON lines file of Kafka records")
    ap.add_argument("--catalog-db", help="SQLite file for the SqlCatalog")
    ap.add_argument("--commits", type=int, default=1, help="number of append snapshots")
    ap.add_argument("--mode", choices=["raw", "structured"], default="raw")
    ap.add_argument("--property", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--delete-offsets", default="", metavar="P:O,P:O")
    ap.add_argument("--file-per-partition", action="store_true")
    ap.add_argument("--page-checksums", action="store_true")
    args = ap.parse_args(argv)
    if "." not in args.table:
        ap.error("--table must be NAMESPACE.NAME")
    if args.commits < 1:
        ap.error("--commits must be >= 1")
    props = {}
    for kv in args.property:
        if "=" not in kv:
            ap.error(f"--property needs KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        props[k] = v
    args.properties = props
    pairs = []
    for item in filter(None, (s.strip() for s in args.delete_offsets.split(","))):
        try:
            p, o = item.split(":")
            pairs.append((int(p), int(o)))
        except ValueError:
            ap.error(f"--delete-offsets wants P:O pairs, got {item!r}")
    args.delete_pairs = pairs
    return args


def _write_page_checksums() -> None:
    """Make pyiceberg's Parquet writer put a CRC on every page (it has no table property for it)."""
    import pyiceberg.io.pyarrow as writer

    original = writer._get_parquet_writer_kwargs

    def with_checksums(table_properties):
        return {**original(table_properties), "write_page_checksum": True}

    writer._get_parquet_writer_kwargs = with_checksums


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _hour_transform_without_pyiceberg_core()
    if args.page_checksums:
        _write_page_checksums()
    records = load_records(args.records)
    catalog = open_catalog(args.warehouse, args.catalog_db)
    table = load_or_create(catalog, args.table, args.vendor, args.mode, args.properties)

    # Build Arrow data against the table's own schema, so nullability and the
    # Parquet field ids match what pyiceberg expects.
    arrow_schema = schema_to_pyarrow(table.schema())
    to_row = ROWS[args.vendor]
    for chunk in chunks(records, args.commits):
        if not chunk:
            continue
        if args.file_per_partition:
            parts = sorted({r["partition"] for r in chunk})
            groups = [[r for r in chunk if r["partition"] == p] for p in parts]
        else:
            groups = [chunk]
        for group in groups:
            rows = [to_row(r, args.mode) for r in group]
            table.append(pa.Table.from_pylist(rows, schema=arrow_schema))

    if args.delete_pairs:
        table.delete(delete_filter(args.vendor, args.delete_pairs))

    table = catalog.load_table(args.table)
    snap = table.current_snapshot()
    print(
        json.dumps(
            {
                "location": table.location(),
                "metadata_location": table.metadata_location,
                "snapshot_id": snap.snapshot_id if snap else None,
            }
        )
    )


if __name__ == "__main__":
    main()
