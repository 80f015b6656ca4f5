"""An output's Apache Iceberg tables, through ``pyiceberg`` and a catalog named by configuration.

``explain --format iceberg --iceberg-catalog NAME`` registers ``tracks``, ``explanations``,
``errors``, ``members`` and ``global_importance`` as ``<namespace>.<table>`` in the catalog
that pyiceberg's own configuration names NAME (``.pyiceberg.yaml`` in ``$PYICEBERG_HOME``
or the home folder, or ``PYICEBERG_CATALOG__<NAME>__URI`` and friends): its URI and
credentials never reach the command line, ``run.json`` or a log. Only the catalog's name and
the namespace are recorded (``run.json``'s ``iceberg``), so ``aggregate``, ``report`` and
``serve`` open the same tables.

Each table's data and metadata lie under the output (``OUT/<table>``): the output stays the
run's warehouse location, and its ``run.json``, ``runs/``, lease, ``_manifests`` and
``_staging`` sit beside the tables as on Delta. Tables are partitioned by ``run_id``
(identity), format version 2. A table's high-water mark for a run is its property
``musiclime.batch.<run_id>``, set in the same commit as the batch's rows (a snapshot
summary would not do: snapshot expiry erases it).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from musiclime import storage

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_NAMESPACE = "musiclime"
MARK_PREFIX = "musiclime.batch."
# A night commits once per batch: thousands of snapshots, and every metadata.json lists them
# all (measured: 670 bytes more per commit, 60 MB of metadata after 400 commits of one table).
# Merged appends bound the manifests a reader opens; old metadata files are deleted; and the
# writer expires the oldest snapshots beyond KEEP_SNAPSHOTS (the table property, which an
# owner may raise) once twice as many stand.
KEEP_PROPERTY = "musiclime.snapshots-kept"
KEEP_SNAPSHOTS = 100
TABLE_PROPERTIES = {
    "format-version": "2",
    "commit.manifest-merge.enabled": "true",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    KEEP_PROPERTY: str(KEEP_SNAPSHOTS),
}


def mark_key(run_id: str) -> str:
    return MARK_PREFIX + run_id


def load_catalog(name: str) -> Any:
    """The catalog pyiceberg's configuration calls ``name``, read now (pyiceberg reads its
    environment once, when first imported; a test or a long-lived server may set it later)."""
    from pyiceberg.catalog import load_catalog as _load
    from pyiceberg.utils.config import Config

    conf = Config().get_catalog_config(name.lower())
    if not conf:
        raise ValueError(
            f"no Iceberg catalog named {name!r} in pyiceberg's configuration (.pyiceberg.yaml in $PYICEBERG_HOME "
            f"or the home folder, or PYICEBERG_CATALOG__{name.upper()}__URI ...)"
        )
    props: dict[str, Any] = {**_aws_defaults(), **conf}
    try:
        return _load(name, **props)
    except Exception as e:  # a driver's message may carry the URI and its password: never log them
        raise ValueError(f"Iceberg catalog {name!r} could not be opened: {redact(str(e), props)}") from None


def redact(text: str, props: dict[str, Any]) -> str:
    """``text`` without any value of the catalog's configuration that may be secret: URIs,
    passwords, tokens, keys and credentials (and the password inside a URI)."""
    import re

    secret = re.compile(r"uri|password|secret|token|credential|key", re.I)
    for key, value in props.items():
        if isinstance(value, str) and value and secret.search(key):
            text = text.replace(value, "***")
            found = re.match(r"^[a-z0-9+.-]+://[^:/@]*:([^@/]+)@", value, re.I)
            if found:
                text = text.replace(found.group(1), "***")
    return text


def _aws_defaults() -> dict[str, str]:
    """What the AWS chain says of the endpoint and region, which pyiceberg's own S3 file IO
    leaves to its ``s3.*`` properties (without a region it asks AWS where the bucket is, and
    without an endpoint it goes to AWS whatever ``AWS_ENDPOINT_URL`` says). Keys and secrets
    stay with the chain, as for every other object-store read."""
    import os

    found = {}
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        found["s3.endpoint"] = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ["AWS_ENDPOINT_URL"]
    if os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        found["s3.region"] = os.environ.get("AWS_REGION") or os.environ["AWS_DEFAULT_REGION"]
    return found


class IcebergTables:
    """The Iceberg tables of one output: created on first write, evolved when a later
    release adds a column, appended to, replaced per run, and planned for reading."""

    def __init__(self, out: str, catalog: str, namespace: str = DEFAULT_NAMESPACE):
        self.out, self.catalog_name, self.namespace = str(out).rstrip("/"), catalog, namespace
        self._catalog: Any = None

    @classmethod
    def of_output(cls, out: str, doc: dict | None = None) -> IcebergTables:
        """The tables an Iceberg output's ``run.json`` names."""
        if doc is None:
            import json

            try:
                doc = json.loads(storage.read_bytes(storage.join(str(out).rstrip("/"), "run.json")))
            except (OSError, ValueError):  # absent: no Iceberg output yet
                doc = {}
        where = doc.get("iceberg") or {}
        if not where.get("catalog"):
            raise ValueError(f"{out}/run.json names no Iceberg catalog (an Iceberg output records one)")
        return cls(out, where["catalog"], where.get("namespace") or DEFAULT_NAMESPACE)

    def record(self) -> dict:
        """What ``run.json`` keeps: names only (the catalog's URI and secrets stay in its config)."""
        return {"catalog": self.catalog_name, "namespace": self.namespace}

    @property
    def catalog(self) -> Any:
        if self._catalog is None:
            self._catalog = load_catalog(self.catalog_name)
        return self._catalog

    def location(self, name: str) -> str:
        loc = storage.join(self.out, name)
        return loc if storage.is_uri(loc) else "file://" + storage.filesystem(loc)[1]

    def table(self, name: str) -> Any:
        """The table, or None where it was never written."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            table = self.catalog.load_table((self.namespace, name))
        except (NoSuchTableError, NoSuchNamespaceError):
            return None
        if table.location().rstrip("/") != self.location(name):
            raise ValueError(
                f"Iceberg table {self.namespace}.{name} in catalog {self.catalog_name!r} lies at {table.location()}, "
                f"not in this output ({self.out}): give each output its own --iceberg-namespace"
            )
        return table

    def _create(self, name: str, schema: pa.Schema) -> Any:
        """The table with ``schema``, partitioned by ``run_id``, in one catalog commit."""
        from pyiceberg.exceptions import TableAlreadyExistsError

        self.catalog.create_namespace_if_not_exists(self.namespace)
        try:
            tx = self.catalog.create_table_transaction(
                (self.namespace, name), schema, location=self.location(name), properties=TABLE_PROPERTIES
            )
            with tx.update_spec() as spec:
                spec.add_identity("run_id")
            return tx.commit_transaction()
        except TableAlreadyExistsError:  # another process made it meanwhile
            return self.table(name)

    def writable(self, name: str, schema: pa.Schema) -> Any:
        """The table, created or evolved so that it takes ``schema``'s columns (a column a
        later release added joins as optional; nothing is dropped or retyped)."""
        table = self.table(name)
        if table is None:
            return self._create(name, _nullable(schema))
        have = {f.name for f in table.schema().fields}
        if any(f.name not in have for f in schema):
            with table.update_schema() as update:
                update.union_by_name(_nullable(schema))
            table = self.table(name)
        return table

    def mark(self, name: str, run_id: str) -> int:
        """The table's high-water mark for ``run_id`` (0: none)."""
        table = self.table(name)
        return int(table.properties.get(mark_key(run_id), 0)) if table is not None else 0

    def append(self, name: str, rows: pa.Table, marks: dict[str, str] | None = None) -> None:
        """``rows`` appended and ``marks`` set as table properties, in one commit."""
        table = self.writable(name, rows.schema)
        with table.transaction() as tx:
            tx.append(_in_table_schema(rows, table))
            if marks:
                tx.set_properties(marks)
        self._expire(table)  # the committed transaction left the table at its new metadata

    @staticmethod
    def _expire(table: Any) -> None:
        """The oldest snapshots expired down to the table's ``musiclime.snapshots-kept`` once
        twice as many stand (one commit per that many; data files stay: every row of an
        append-only table is in the current snapshot)."""
        keep = int(table.properties.get(KEEP_PROPERTY, KEEP_SNAPSHOTS))
        snapshots = sorted(table.snapshots(), key=lambda snap: snap.timestamp_ms)
        if keep > 0 and len(snapshots) > 2 * keep:
            table.maintenance.expire_snapshots().by_ids([snap.snapshot_id for snap in snapshots[:-keep]]).commit()

    def replace_run(self, name: str, run_id: str, parts: Any, schema: pa.Schema) -> None:
        """A run's rows of ``name`` replaced by ``parts`` (Arrow tables with ``run_id``), in
        one commit: readers see the old rows or the new, never both or neither."""
        table = self.writable(name, schema)
        with table.transaction() as tx, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Delete operation did not match any records")  # a first write
            tx.delete(where("EqualTo", "run_id", run_id))
            for part in parts:
                if part.num_rows:
                    tx.append(_in_table_schema(part, table))

    def delete_run(self, name: str, run_id: str) -> None:
        table = self.table(name)
        if table is not None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                table.delete(where("EqualTo", "run_id", run_id))

    def files(self, name: str, run_ids: set[str] | None = None) -> list[tuple[str, str]]:
        """``(run_id, data file location)`` of the table's current snapshot (of ``run_ids``
        only, when given). A table another engine gave delete files (merge-on-read) is
        refused: its data files alone would bring deleted rows back."""
        table = self.table(name)
        if table is None or (run_ids is not None and not run_ids):
            return []
        row_filter = where("In", "run_id", sorted(run_ids)) if run_ids is not None else where("AlwaysTrue")
        found = []
        for task in table.scan(row_filter=row_filter).plan_files():
            if task.delete_files:
                raise ValueError(
                    f"Iceberg table {self.namespace}.{name} has delete files (merge-on-read, written by another "
                    f"engine): musiclime reads copy-on-write tables; rewrite it (e.g. Spark's rewrite_data_files)"
                )
            path = task.file.file_path
            found.append((str(task.file.partition[0]), path.removeprefix("file://")))
        return found

    def version(self, name: str) -> str:
        """The table's current snapshot (what an index built from it depends on)."""
        table = self.table(name)
        snap = table.current_snapshot() if table is not None else None
        return str(snap.snapshot_id) if snap is not None else "none"


def where(predicate: str, *args: Any) -> Any:
    """A pyiceberg row filter, e.g. ``where("EqualTo", "run_id", run)`` (its predicates are
    pydantic models, whose positional constructors type checkers do not see)."""
    from pyiceberg import expressions

    return getattr(expressions, predicate)(*args)


def _nullable(schema: pa.Schema) -> pa.Schema:
    """Table columns are optional, ``run_id`` aside: Iceberg may not add a required column
    to a standing table, and the rows' own checks are the writer's business."""
    import pyarrow as pa

    return pa.schema([f.with_nullable(f.name != "run_id") for f in schema])


def _in_table_schema(rows: pa.Table, table: Any) -> pa.Table:
    """``rows`` with every column of the table (nulls for those an older release lacked),
    in the table's column order and nullability, which pyiceberg's append checks."""
    import pyarrow as pa

    target = table.schema().as_arrow()
    cols = []
    for f in target:
        col = rows.column(f.name) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
        cols.append(col.cast(f.type))
    return pa.Table.from_arrays(cols, schema=pa.schema([f.remove_metadata() for f in target]))
