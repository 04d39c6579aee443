"""The warehouse resource closes its connection when the block raises (tier 1)."""

import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from resources.warehouse import WarehouseResource


def test_a_block_that_raises_leaves_no_connection_open(tmp_path):
    """dagster_duckdb's own resource leaves the connection open after a raise: another connection to the file
    with a different configuration is then refused. Ours closes it."""
    path = str(tmp_path / "w.duckdb")
    held = []
    with pytest.raises(RuntimeError, match="refused decision"):
        with WarehouseResource(database=path).get_connection() as con:
            held.append(con)  # a traceback keeps it referenced, as a failed run's error does
            con.execute("create table t as select 1 as x")
            raise RuntimeError("refused decision")
    with duckdb.connect(path) as other:  # default configuration, unlike the resource's
        assert other.execute("select x from t").fetchall() == [(1,)]
    with WarehouseResource(database=path).get_connection() as con:  # a normal block still works
        assert con.execute("select count(*) from t").fetchone() == (1,)


def test_the_library_resource_alone_would_leave_it_open(tmp_path):
    """Why the override exists: without it the same sequence is refused."""
    path = str(tmp_path / "w.duckdb")
    held = []
    with pytest.raises(RuntimeError):
        with DuckDBResource(database=path).get_connection() as con:
            held.append(con)
            raise RuntimeError("refused decision")
    with pytest.raises(duckdb.ConnectionException, match="different configuration"):
        duckdb.connect(path)
    held[0].close()
