"""Multi-row INSERTs that stay fast on PostgreSQL and within SQLite's parameter limit.

Shared by the worker's usage store and the rollup job: both upsert thousands of rows per
transaction with `INSERT ... ON CONFLICT`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper


@dataclasses.dataclass(frozen=True, slots=True)
class BulkInsert:
    """One multi-row INSERT, built once from a model's table and column names.

    On PostgreSQL the rows travel as one array per column through `unnest()`: a statement
    has as many parameters as columns, whatever the number of rows. The arrays are bound on
    the server, in binary (`%b`): Django's client-side binding would quote every element
    into the SQL text (for JSON text that means escaping every quote), which made binding
    cost more than the statement itself. Other backends (SQLite) get a VALUES list, split to
    stay under their parameter limit.
    """

    head: str  # INSERT INTO table (columns)
    tail: str  # ON CONFLICT ...
    array_types: tuple[str, ...] | None  # PostgreSQL: the array cast of each column

    @classmethod
    def of(
        cls, connection: BaseDatabaseWrapper, model: Any, names: Sequence[str], tail: str
    ) -> BulkInsert:
        quote = connection.ops.quote_name
        fields = [model._meta.get_field(name) for name in names]
        columns = ", ".join(quote(f.column) for f in fields)
        array_types = None
        if connection.vendor == "postgresql":
            array_types = tuple(f"{f.db_type(connection)}[]" for f in fields)
        return cls(f"INSERT INTO {quote(model._meta.db_table)} ({columns})", tail, array_types)

    def statements(
        self, rows: list[tuple[Any, ...]], max_rows: int, max_params: int
    ) -> Iterator[tuple[str, list[Any]]]:
        """(sql, params) pairs that insert `rows`, each at most `max_rows` rows."""
        if not rows:
            return
        num_columns = len(rows[0])
        if self.array_types is None:
            max_rows = max(1, min(max_rows, max_params // num_columns))
        for start in range(0, len(rows), max_rows):
            yield self._statement(rows[start : start + max_rows], num_columns)

    def _statement(self, chunk: list[tuple[Any, ...]], num_columns: int) -> tuple[str, list[Any]]:
        if self.array_types is not None:
            arrays = ", ".join(f"%b::{array_type}" for array_type in self.array_types)
            columns = [list(column) for column in zip(*chunk, strict=True)]
            return f"{self.head} SELECT * FROM unnest({arrays}) {self.tail}", columns
        row = "(" + ", ".join(["%s"] * num_columns) + ")"
        values = ", ".join([row] * len(chunk))
        return f"{self.head} VALUES {values} {self.tail}", [v for row in chunk for v in row]


def execute_bulk(
    connection: BaseDatabaseWrapper,
    insert: BulkInsert,
    rows: list[tuple[Any, ...]],
    max_rows_per_statement: int = 5000,
) -> list[tuple[Any, ...]]:
    """Run `insert` over `rows`; return what its RETURNING clause, if any, returned.

    In the caller's transaction, through Django's cursor wrapper (so execute wrappers and
    query logging see the statements), on a server-binding cursor on PostgreSQL.
    """
    max_params = connection.features.max_query_params or 65_535
    returned: list[tuple[Any, ...]] = []
    server = insert.array_types is not None
    with server_binding_cursor(connection) if server else connection.cursor() as cursor:
        for sql, params in insert.statements(rows, max_rows_per_statement, max_params):
            cursor.execute(sql, params)
            if cursor.description is not None:  # a RETURNING clause
                returned.extend(cursor.fetchall())
    return returned


def server_binding_cursor(connection: BaseDatabaseWrapper) -> CursorWrapper:
    """A cursor on the connection's PostgreSQL session that binds parameters on the server
    (Django's own binds on the client), wrapped as Django wraps its cursors."""
    import psycopg

    connection.ensure_connection()
    # make_cursor wraps any DB-API cursor; the stubs name only Django's own.
    return connection.make_cursor(psycopg.Cursor(connection.connection))  # type: ignore[arg-type]
