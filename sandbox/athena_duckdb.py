"""The stack's Athena SQL run in DuckDB over the local lake: raw tables as Arrow, Iceberg tables through pyiceberg.

DuckDB cannot load its iceberg extension offline, so an Iceberg table is read through a pyiceberg scan: every
reference to a registered Iceberg table in the query is replaced by the rows of the snapshot Athena would read:

- ``"db"."table"``: the current snapshot;
- ``"db"."table" FOR TIMESTAMP AS OF <expression>``: the snapshot that was current at that moment (the table's
  snapshot log, as Athena reads it), the expression evaluated by DuckDB; a moment before the first snapshot (or
  after the ones kept were expired) is refused, as Athena refuses it;
- ``"db"."table" FOR VERSION AS OF <snapshot id>``: that snapshot;
- ``"db"."table$snapshots"``: the table's snapshots (``committed_at``, ``snapshot_id``, ``parent_id``,
  ``operation``, ``manifest_list``, ``summary``), Athena's metadata table.

A reference that is a ``SELECT``'s only source passes that ``SELECT``'s comparisons of one of its columns with a
constant (``change_time >= date_trunc('day', current_timestamp - INTERVAL '6' DAY)``, the named queries' windows)
to the scan as its row filter, so pyiceberg plans only the files whose partitions and column bounds can match, as
Athena plans an Iceberg table from its manifests, instead of reading the whole table for a week of it. The filter
is applied again by DuckDB, so the rows are the same either way.

``CURRENT_TIMESTAMP`` can be pinned to a given moment, so a query's answer does not depend on the wall clock.
Nothing else is translated: the rest is sqlglot's Athena -> DuckDB transpilation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import sqlglot
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
)
from pyiceberg.expressions.visitors import bind
from sqlglot import exp

if TYPE_CHECKING:
    from pyiceberg.table import Table as IcebergTable

__all__ = ["AthenaOnDuckDB", "TimeTravelError"]

_SNAPSHOTS_SUFFIX = "$snapshots"
# A comparison ``column <op> constant``: its operator, the operator with the sides swapped, and as pyiceberg's.
_OPERATORS: dict[type[exp.Expression], str] = {exp.GTE: ">=", exp.GT: ">", exp.LTE: "<=", exp.LT: "<", exp.EQ: "="}
_MIRRORED = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "=": "="}
_ICEBERG: dict[str, type[Any]] = {
    ">=": GreaterThanOrEqual,
    ">": GreaterThan,
    "<=": LessThanOrEqual,
    "<": LessThan,
    "=": EqualTo,
}
Comparison = tuple[str, str, Any]


class TimeTravelError(ValueError):
    """A ``FOR ... AS OF`` names no snapshot the table holds (before the first one, or expired)."""


@dataclass
class AthenaOnDuckDB:
    """One DuckDB connection holding the local lake's tables under their Glue database and table names."""

    now: datetime | None = None
    """What ``CURRENT_TIMESTAMP`` means in every query (None: DuckDB's clock)."""
    connection: duckdb.DuckDBPyConnection = field(default_factory=duckdb.connect)
    _iceberg: dict[tuple[str, str], IcebergTable] = field(default_factory=dict, init=False, repr=False)
    _scans: dict[tuple[str, str, int | None, str], str] = field(default_factory=dict, init=False, repr=False)
    #: The snapshot each Iceberg reference of the last query read: (database, table) -> snapshot ids.
    snapshots_read: dict[tuple[str, str], list[int | None]] = field(default_factory=dict, init=False)
    #: The row filter each Iceberg reference of the last query passed to its scan, and the rows the scan gave.
    filters_read: dict[tuple[str, str], list[tuple[str, int]]] = field(default_factory=dict, init=False)
    _scanned_rows: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _data_files: dict[tuple[str, str], dict[str, dict[str, tuple[Any, Any]]]] = field(
        default_factory=dict, init=False, repr=False
    )
    _views: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.now is not None and self.now.utcoffset() is None:
            raise ValueError(f"now {self.now.isoformat()} has no time zone")
        self.connection.execute("SET TimeZone = 'UTC'")

    def add_rows(self, database: str, name: str, rows: pa.Table) -> None:
        """A plain table (the raw Hive table, for instance) as ``"database"."name"``."""
        self._schema(database)
        view = f"rows_{database}_{name}"
        self.connection.register(view, rows)
        # Names are the stack's Glue names (or a test's), never an analyst's input.
        self.connection.execute(f'CREATE OR REPLACE VIEW "{database}"."{name}" AS SELECT * FROM "{view}"')  # noqa: S608

    def add_parquet(self, database: str, name: str, files: list[str], *, hive_partitioning: bool = False) -> None:
        """Parquet files (paths or globs) read in place as ``"database"."name"`` (the raw table's objects with
        ``dt`` and ``hour`` from their keys, or a table's data files): DuckDB prunes them by path (hive) or by
        column statistics."""
        if not files:
            raise ValueError(f"{database}.{name}: no files")
        self._schema(database)
        listed = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
        # Partition values stay text, as the Glue table declares them (dt, hour, export_id are strings).
        hive = (
            "hive_partitioning = true, hive_types_autocast = false"
            if hive_partitioning
            else "hive_partitioning = false"
        )
        self.connection.execute(
            f'CREATE OR REPLACE VIEW "{database}"."{name}" AS '  # noqa: S608 - paths quoted above
            f"SELECT * FROM read_parquet([{listed}], {hive})"
        )

    def add_data_files(self, database: str, name: str, files: list[str], bounds: tuple[str, ...]) -> None:
        """A table's Parquet data files with each file's lower and upper bound of the ``bounds`` columns read once
        from its footer, as an Iceberg manifest records them when the file is committed: a reference is planned as
        Athena plans an Iceberg table, reading only the files whose bounds can match the comparisons of the
        ``SELECT`` it is the only source of (with a constant), instead of opening every file to prune it."""
        if not files:
            raise ValueError(f"{database}.{name}: no files")
        self._schema(database)
        self._data_files[(database, name)] = {path: _file_bounds(path, bounds) for path in files}

    def add_iceberg(self, database: str, name: str, table: IcebergTable) -> None:
        """An Iceberg table, read through pyiceberg at the snapshot each reference asks for."""
        self._iceberg[(database, name)] = table

    def translate(self, sql: str) -> str:
        """``sql`` (Athena) as DuckDB SQL over this connection: Iceberg references resolved to snapshot scans."""
        self.snapshots_read = {}
        self.filters_read = {}
        tree = sqlglot.parse_one(sql, read="athena")
        for node in list(tree.find_all(exp.CurrentTimestamp)):
            if self.now is not None:
                node.replace(exp.cast(exp.Literal.string(self.now.astimezone(UTC).isoformat()), "TIMESTAMPTZ"))
        for table in list(tree.find_all(exp.Table)):
            replacement = self._resolve(table)
            if replacement is not None:
                table.replace(replacement)
        return tree.sql(dialect="duckdb")

    def query(self, sql: str) -> pa.Table:
        """Run ``sql`` (Athena) and return its rows."""
        return self.connection.sql(self.translate(sql)).to_arrow_table()

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return self.query(sql).to_pylist()

    # -- resolution -------------------------------------------------------------------------------------------
    def _resolve(self, node: exp.Table) -> exp.Table | None:
        database, name = node.db, node.name
        if (database, name) in self._data_files:
            files = self._data_files[(database, name)]
            planned = self._planned(node, files)
            listed = ", ".join("'" + path.replace("'", "''") + "'" for path in planned or list(files)[:1])
            view = f"planned_{database}_{name}_{len(self._views)}"
            self._views.append(view)
            # Paths from add_data_files, quoted above; no file planned: the table's columns, no rows.
            limit = "" if planned else " LIMIT 0"
            self.connection.execute(
                f'CREATE OR REPLACE TEMP VIEW "{view}" AS SELECT * FROM read_parquet([{listed}]){limit}'  # noqa: S608
            )
            self.filters_read.setdefault((database, name), []).append((f"{len(planned)} of {len(files)} files", -1))
            return self._replacement(node, view)
        if name.endswith(_SNAPSHOTS_SUFFIX) and (database, name[: -len(_SNAPSHOTS_SUFFIX)]) in self._iceberg:
            base = self._iceberg[(database, name[: -len(_SNAPSHOTS_SUFFIX)])]
            return self._replacement(node, self._register(f"snapshots_{database}_{name}", _snapshots_of(base)))
        table = self._iceberg.get((database, name))
        if table is None:
            return None
        snapshot_id = self._snapshot_id(table, node.args.get("version"), f"{database}.{name}")
        self.snapshots_read.setdefault((database, name), []).append(snapshot_id)
        row_filter = self._row_filter(node, table)
        key = (database, name, snapshot_id, repr(row_filter))
        if key not in self._scans:
            if snapshot_id is None:
                rows = table.schema().as_arrow().empty_table()
            else:
                rows = table.scan(snapshot_id=snapshot_id, row_filter=row_filter).to_arrow()
            view = f"iceberg_{database}_{name}_{snapshot_id or 'empty'}_{len(self._scans)}"
            self._scans[key] = self._register(view, rows)
            self._scanned_rows[self._scans[key]] = rows.num_rows
        self.filters_read.setdefault((database, name), []).append(
            (str(row_filter), self._scanned_rows[self._scans[key]])
        )
        return self._replacement(node, self._scans[key])

    def _comparisons(self, node: exp.Table, names: set[str]) -> list[Comparison]:
        """The comparisons of ``node``'s columns (of ``names``) with constants in the ``WHERE`` of the ``SELECT`` it
        is the only source of, each as (column, operator, value), the column on the left; none when joined."""
        select = node.parent.parent if isinstance(node.parent, exp.From) else None
        if not isinstance(select, exp.Select) or select.args.get("joins") or select.args.get("where") is None:
            return []
        qualifiers = {"", node.name, node.alias_or_name}
        condition = select.args["where"].this
        terms = list(condition.flatten()) if isinstance(condition, exp.And) else [condition]
        comparisons: list[Comparison] = []
        for term in terms:
            operator = next((how for kind, how in _OPERATORS.items() if isinstance(term, kind)), None)
            if operator is None:
                continue
            left, right = term.args.get("this"), term.args.get("expression")
            for column, constant, how in ((left, right, operator), (right, left, _MIRRORED[operator])):
                if not (
                    isinstance(column, exp.Column)
                    and column.name in names
                    and column.table in qualifiers
                    and isinstance(constant, exp.Expression)
                    and constant.find(exp.Column) is None
                ):
                    continue
                # Not a constant DuckDB can compute alone: DuckDB applies it in the query.
                with contextlib.suppress(duckdb.Error):
                    comparisons.append((column.name, how, self._evaluate(constant)))
                break
        return comparisons

    def _row_filter(self, node: exp.Table, table: IcebergTable) -> BooleanExpression:
        """``node``'s comparisons with constants as a pyiceberg filter (AlwaysTrue when there are none)."""
        predicates: list[BooleanExpression] = []
        for column, how, constant in self._comparisons(node, {item.name for item in table.schema().fields}):
            value = constant.isoformat() if isinstance(constant, datetime | date) else constant
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                continue
            predicate: BooleanExpression = _ICEBERG[how](column, value)
            try:
                bind(table.schema(), predicate, case_sensitive=True)
            except (ValueError, TypeError):  # a constant the column's type cannot hold: DuckDB alone decides
                continue
            predicates.append(predicate)
        if not predicates:
            return AlwaysTrue()
        return predicates[0] if len(predicates) == 1 else And(*predicates)

    def _planned(self, node: exp.Table, files: dict[str, dict[str, tuple[Any, Any]]]) -> list[str]:
        """The data files whose recorded column bounds can hold a row matching ``node``'s comparisons."""
        names = {column for bounds in files.values() for column in bounds}
        comparisons = self._comparisons(node, names)
        return [path for path, bounds in files.items() if all(_may_match(bounds, c) for c in comparisons)]

    def _snapshot_id(self, table: IcebergTable, version: exp.Expression | None, label: str) -> int | None:
        """The snapshot a reference reads: the current one, or the one its ``FOR ... AS OF`` names."""
        if version is None:
            current = table.current_snapshot()
            return current.snapshot_id if current is not None else None
        kind, how = str(version.this).upper(), str(version.args.get("kind", "")).upper()
        if how != "AS OF":
            raise TimeTravelError(f"{label}: only FOR TIMESTAMP AS OF and FOR VERSION AS OF are supported, got {how}")
        value = self._evaluate(version.expression)
        if kind == "VERSION":
            if table.metadata.snapshot_by_id(int(value)) is None:
                raise TimeTravelError(f"{label} has no snapshot {value}")
            return int(value)
        if kind != "TIMESTAMP":
            raise TimeTravelError(f"{label}: FOR {kind} AS OF is not Athena's time travel")
        if not isinstance(value, datetime):
            raise TimeTravelError(f"{label}: FOR TIMESTAMP AS OF needs a timestamp, got {value!r}")
        moment = value if value.utcoffset() is not None else value.replace(tzinfo=UTC)  # Athena: UTC if none
        millis = int(moment.timestamp() * 1000)
        snapshot = table.snapshot_as_of_timestamp(millis, inclusive=True)
        if snapshot is None:
            raise TimeTravelError(f"{label} has no snapshot as of {moment.astimezone(UTC).isoformat()}")
        return snapshot.snapshot_id

    def _evaluate(self, expression: exp.Expression) -> Any:
        """The value of a constant expression (``current_timestamp`` already pinned), computed by DuckDB."""
        select = exp.select(expression.copy()).sql(dialect="duckdb")
        ((value,),) = self.connection.execute(select).fetchall()
        return value

    def _register(self, view: str, rows: pa.Table) -> str:
        safe = "".join(character if character.isalnum() else "_" for character in view)
        self.connection.register(safe, rows)
        return safe

    @staticmethod
    def _replacement(node: exp.Table, view: str) -> exp.Table:
        replacement = exp.to_table(view)
        alias = node.args.get("alias")
        if alias is not None:
            replacement.set("alias", alias.copy())
        else:
            # Columns qualified by the table's own name (e.g. "stored".col without an alias) keep resolving.
            replacement.set("alias", exp.TableAlias(this=exp.to_identifier(node.name, quoted=True)))
        return replacement

    def _schema(self, database: str) -> None:
        self.connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{database}"')


def _snapshots_of(table: IcebergTable) -> pa.Table:
    """Athena's ``$snapshots`` of ``table``: pyiceberg's, with ``committed_at`` a UTC timestamp with time zone
    (as Athena types it; pyiceberg gives the same UTC instant without a zone)."""
    snapshots = table.inspect.snapshots()
    index = snapshots.schema.get_field_index("committed_at")
    committed = snapshots.column(index)
    if committed.type.tz is None:
        committed = committed.cast(pa.timestamp(committed.type.unit, tz="UTC"))
    return snapshots.set_column(index, "committed_at", committed)


def _file_bounds(path: str, columns: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """The lowest and highest value of each of ``columns`` in the Parquet file at ``path`` (its row groups'
    statistics); a column without statistics is left out (the file then always matches on it)."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - only tables given as data files need it

    metadata = pq.read_metadata(path)
    # Leaf columns by their path: a nested column (a list, a map) is several leaves, so arrow positions differ.
    leaves = {metadata.schema.column(index).path: index for index in range(metadata.num_columns)}
    bounds: dict[str, tuple[Any, Any]] = {}
    for column in columns:
        if column not in leaves:
            continue
        index = leaves[column]
        stats = [metadata.row_group(group).column(index).statistics for group in range(metadata.num_row_groups)]
        if not stats or any(item is None or not item.has_min_max for item in stats):
            continue
        bounds[column] = (min(item.min for item in stats), max(item.max for item in stats))
    return bounds


def _may_match(bounds: dict[str, tuple[Any, Any]], comparison: Comparison) -> bool:
    """Whether a file with ``bounds`` can hold a row satisfying ``comparison`` (True when it cannot tell)."""
    column, how, value = comparison
    if column not in bounds:
        return True
    lower, upper = bounds[column]
    tests = {
        ">=": lambda: upper >= value,
        ">": lambda: upper > value,
        "<=": lambda: lower <= value,
        "<": lambda: lower < value,
        "=": lambda: lower <= value <= upper,
    }
    try:
        return bool(tests[how]())
    except TypeError:
        return True
