"""Raw SQL that reads and writes rows exactly as the ORM does, for the hot path only.

Why: placing an order (docs/performance.md) ran about a dozen ORM statements, and each
cost about 0.5 ms of Python CPU to compile the query and build model instances; the
same statement through the connection's cursor costs about 0.06 ms. These helpers keep
the ORM's semantics where it matters: values are adapted with each field's own
get_db_prep_save (SQLite stores datetimes as naive UTC text, PostgreSQL takes them as
they are), rows become instances through Model.from_db with the backend's and the
field's converters (JSON, SQLite decimals and datetimes), as a queryset builds them.
Signals are not sent (no model in this project listens to any).

On PostgreSQL, cursor() binds parameters server-side and prepares each statement on
first use on a connection (a pooled connection keeps its prepared statements), the way
pgbench -M prepared runs the ceiling transaction: PostgreSQL then skips parsing and
planning, about half of its CPU per order. Only these statements are prepared: the
project's ORM queries keep Django's client-side binding (DATABASES OPTIONS unchanged).
Every statement here names its columns, so a migration that adds a column cannot change
a prepared statement's result type under a running process.

Use them where a profile says the ORM is the cost; everywhere else, the ORM.
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from decimal import Decimal

from django.db import DEFAULT_DB_ALIAS, connections

try:
    import psycopg
except ImportError:  # SQLite only (the embedded default without psycopg)
    psycopg = None

# Django leaves a connection's prepare_threshold at None (never prepare). Our cursors ask
# for preparation explicitly, so the count threshold is set out of reach: a server-side
# binding cursor that does not ask (none in this project) still never prepares. Client-side
# binding cursors (the ORM's) never prepare at all.
_THRESHOLD_NEVER_BY_COUNT = 2**31 - 1

if psycopg is not None:

    class _PreparingCursor(psycopg.Cursor):
        """Server-side binding; every statement prepared on first use (psycopg keeps up to
        `prepared_max` per connection, least recently used first out)."""

        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=True, binary=binary)

        def _send_query_prepared(self, name, pgq, *args, **kwargs):
            # psycopg records the query only when it is not prepared; Django's debug log
            # (connection.queries, assertNumQueries) reads it to show the statement.
            self._query = pgq
            return super()._send_query_prepared(name, pgq, *args, **kwargs)


def _db():
    return connections[DEFAULT_DB_ALIAS]


def cursor():
    """A cursor wrapped like connection.cursor() (Django's error translation, execute
    wrappers, debug logging), preparing its statements on PostgreSQL."""
    db = _db()
    if psycopg is None or db.vendor != "postgresql":
        return db.cursor()
    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = db.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _THRESHOLD_NEVER_BY_COUNT
    with db.wrap_database_errors:
        db.validate_thread_sharing()
        cur = _PreparingCursor(raw)
        return db.make_debug_cursor(cur) if db.queries_logged else db.make_cursor(cur)


@functools.cache
def _fields(model) -> tuple:
    return tuple(model._meta.concrete_fields)


@functools.cache
def _converters(model) -> tuple:
    db = _db()
    out = []
    for index, field in enumerate(_fields(model)):
        col = field.get_col(model._meta.db_table)
        funcs = tuple(db.ops.get_db_converters(col) + field.get_db_converters(db))
        if funcs:
            out.append((index, col, funcs))
    return tuple(out)


@functools.cache
def select_list(model, alias: str) -> str:
    """The columns of `model`'s concrete fields, in declaration order, for table `alias`."""
    return ", ".join(f'{alias}."{field.column}"' for field in _fields(model))


def width(model) -> int:
    return len(_fields(model))


def load(model, values):
    """An instance from a row of select_list(model, ...) values."""
    converting = _converters(model)
    db = _db()
    if converting:
        values = list(values)
        for index, col, funcs in converting:
            for func in funcs:
                values[index] = func(values[index], col, db)
    return model.from_db(db.alias, None, values)


def for_update() -> str:
    # SQLite (the embedded default) has no row locks: its writers are serialized anyway.
    return " FOR UPDATE" if _db().features.has_select_for_update else ""


# On PostgreSQL, get_db_prep_save hands these back as they are (same type, same value);
# skipping the call saves about 4 us a value, some 50 values an order. Anything else (JSON,
# enums, naive datetimes, non-finite decimals, another backend) goes through the field.
_PLAIN_ON_POSTGRES = frozenset({str, int, bool, date, type(None)})
_PLAIN_FIELDS = frozenset(
    {
        "AutoField", "BigAutoField", "BigIntegerField", "BooleanField", "CharField", "DateField",
        "DateTimeField", "DecimalField", "ForeignKey", "IntegerField", "PositiveIntegerField",
        "PositiveSmallIntegerField", "SmallIntegerField", "TextField",
    }
)


@functools.cache
def _plain_field(field) -> bool:
    return field.get_internal_type() in _PLAIN_FIELDS


def _prep(field, value, db):
    if db.vendor == "postgresql" and _plain_field(field):
        kind = type(value)
        if (
            kind in _PLAIN_ON_POSTGRES
            or (kind is Decimal and value.is_finite())
            or (kind is datetime and value.tzinfo is not None)
        ):
            return value
    return field.get_db_prep_save(value, db)


def db_value(model, name: str, value):
    """`value` as the ORM would send it for field `name` of `model`."""
    return _prep(model._meta.get_field(name), value, _db())


@functools.cache
def _insert_sql(model) -> tuple[str, tuple]:
    fields = tuple(f for f in _fields(model) if not f.primary_key)
    columns = ", ".join(f'"{f.column}"' for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    return f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES ({marks}) RETURNING "id"', fields  # nosec B608


def insert_row(instance, *, cur=None) -> int:
    """INSERT an unsaved instance's row as Model.save() would, with the values as set
    (the caller sets auto_now / auto_now_add fields), and return its id. The instance
    is then a saved one (pk set, _state as after save()). `cur`: one of cursor()'s, to
    reuse (a cursor costs about 30 us to make)."""
    db = _db()
    sql, fields = _insert_sql(type(instance))
    params = [_prep(field, getattr(instance, field.attname), db) for field in fields]
    if cur is None:
        with cursor() as own:
            own.execute(sql, params)
            pk = own.fetchone()[0]
    else:
        cur.execute(sql, params)
        pk = cur.fetchone()[0]
    instance.pk = pk
    instance._state.adding = False
    instance._state.db = db.alias
    return pk
