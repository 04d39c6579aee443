"""SQL takes values as parameters; only checked identifiers are spliced into SQL text.

A static pass (ast) over every module of mlops_core, mlops_assets, resources and sensors finds
each `.execute(...)`, `.executemany(...)` and `.sql(...)` call whose SQL is built by an
f-string, `%` or `.format`, directly or through a local variable, and accepts an
interpolation only if it is one of these (the whole list):

1. a literal;
2. `checked_identifier(...)` (mlops_core/features/offline.py: a plain [schema.]table name or ValueError);
3. a module constant (UPPER_CASE, read from the imported module) holding identifiers or numbers;
4. a local variable every assignment of which, in its function, is itself accepted
   (the code's idiom: `table = checked_identifier(table)` first, then `{table}`);
5. `"<sep>".join(...)`, a comprehension or `a if c else b` built only of accepted parts;
6. `int(...)` or `float(...)`: a number cannot carry SQL (DuckDB's SAMPLE takes no parameter);
7. one of the SQL builders in SQL_BUILDERS, with accepted arguments: they build the feature SQL
   from the feature spec and are tested for equality with an independent implementation.

Anything else is reported with file, line and expression.
"""

import ast
import importlib
import re
from pathlib import Path

from mlops_core.settings import REPO_ROOT

ROOTS = ("mlops_core", "mlops_assets", "resources", "sensors")
SQL_METHODS = {"execute", "executemany", "sql"}
CHECKERS = {"checked_identifier", "raw_table"}  # raw_table: the source must be one of the contract's
CASTS = {"int", "float"}
SQL_BUILDERS = {"point_in_time_features_sql", "labels_known_at_cutoff_sql", "brute_force_features_sql"}
# A snapshot project's feature list, built from declared aggregates (not identifiers): it re-checks each one
# (test_the_snapshot_feature_builder_refuses_what_the_declaration_would), and tests/test_projects/test_snapshots.py
# checks each aggregate's value at the window edges against hand-computed ones.
AGGREGATE_BUILDERS = {"snapshot_features_sql"}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
# A SQL type as a constant's value may carry one (p, s) suffix, e.g. DECIMAL(18, 6).
SQL_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]*(\(\d+(, ?\d+)?\))?")


# Interpolations accepted by name, with the reason; each is a candidate for checked_identifier.
ALLOWED = {
    "mlops_core/scoring.py: {casts}": "a list built from SCORE_COLUMNS, each name through checked_identifier, each type a constant",
    "mlops_core/features/stores.py: {', '.join('?' * len(chunk))}": "placeholders only: the ids are bound parameters",
    "mlops_core/serving/prediction_log.py: {sync}": "a pragma takes no parameters; sync is checked against ('normal', 'full') in __init__",
    "mlops_core/projects/snapshots.py: {sql}": "the project's own snapshots.sql, run as its population and label query (as dbt runs a model's SQL); its author owns the project, and the result is checked column by column",
}


def _modules():
    for root in ROOTS:
        for path in sorted((REPO_ROOT / root).rglob("*.py")):
            yield path, ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)


def _safe_constant(value) -> bool:
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        return bool(IDENTIFIER.fullmatch(value) or SQL_TYPE.fullmatch(value))
    if isinstance(value, dict):
        # Spliced as an iterable (join, comprehension): its keys.
        return all(_safe_constant(k) for k in value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_safe_constant(v) for v in value)
    return False


class Checker:
    def __init__(self, path: Path, module_name: str, tree: ast.Module) -> None:
        self.path = path
        self.module = importlib.import_module(module_name)
        self.parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        self.problems: list[str] = []

    def function_of(self, node):
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return None

    def assignments(self, name: str, scope) -> list[ast.expr] | None:
        """Values bound to `name` in `scope` (assignments, loop targets); None if there are none,
        e.g. a parameter used as it came in."""
        if scope is None:
            return None
        values = []
        for n in ast.walk(scope):
            if isinstance(n, ast.Assign):
                for target in n.targets:
                    if isinstance(target, ast.Name) and target.id == name:
                        values.append(n.value)
                    elif isinstance(target, ast.Tuple) and name in {
                        e.id for e in target.elts if isinstance(e, ast.Name)
                    }:
                        # a, b = f(a), f(b) pairs up; a, b = (f(x) for x in ...) binds each to the whole value
                        if isinstance(n.value, ast.Tuple) and len(n.value.elts) == len(target.elts):
                            values += [
                                v for e, v in zip(target.elts, n.value.elts) if isinstance(e, ast.Name) and e.id == name
                            ]
                        else:
                            values.append(n.value)
            elif isinstance(n, (ast.For, ast.comprehension)) and name in {
                t.id for t in ast.walk(n.target) if isinstance(t, ast.Name)
            }:
                values.append(n.iter)
        return values or None

    def accepted(self, expr, scope, bound: frozenset = frozenset()) -> bool:
        if isinstance(expr, ast.Constant):
            return True
        if isinstance(expr, ast.Name):
            if expr.id in bound:
                return True
            if expr.id.lstrip("_").isupper() and hasattr(self.module, expr.id):
                return _safe_constant(getattr(self.module, expr.id))
            values = self.assignments(expr.id, scope)
            return values is not None and all(self.accepted(v, scope, bound | {expr.id}) for v in values)
        if isinstance(expr, ast.Attribute):
            if (
                expr.attr.lstrip("_").isupper()
                and isinstance(expr.value, ast.Name)
                and hasattr(self.module, expr.value.id)
            ):
                owner = getattr(self.module, expr.value.id)
                return hasattr(owner, expr.attr) and _safe_constant(getattr(owner, expr.attr))
            return False
        if isinstance(expr, ast.Call):
            name = (
                expr.func.id
                if isinstance(expr.func, ast.Name)
                else expr.func.attr
                if isinstance(expr.func, ast.Attribute)
                else None
            )
            args_ok = all(self.accepted(a, scope, bound) for a in expr.args)
            if name in CHECKERS or name in CASTS:
                return True
            if name in SQL_BUILDERS or name in AGGREGATE_BUILDERS:
                return True  # each checks its arguments (test_sql_builders_check_their_identifiers and below)
            if name == "join" and isinstance(expr.func, ast.Attribute) and isinstance(expr.func.value, ast.Constant):
                return args_ok
            if (
                name in {"items", "values"}
                and isinstance(expr.func, ast.Attribute)
                and isinstance(expr.func.value, ast.Name)
            ):
                mapping = getattr(self.module, expr.func.value.id, None)
                return isinstance(mapping, dict) and _safe_constant(list(mapping.items()))
            return False
        if isinstance(expr, (ast.GeneratorExp, ast.ListComp)):
            if self.accepted(expr.elt, scope, bound):
                return True  # e.g. checked_identifier(x) for x in anything
            names = frozenset(t.id for g in expr.generators for t in ast.walk(g.target) if isinstance(t, ast.Name))
            return all(self.accepted(g.iter, scope, bound) for g in expr.generators) and self.accepted(
                expr.elt, scope, bound | names
            )
        if isinstance(expr, (ast.List, ast.Tuple)):
            return all(self.accepted(e.value if isinstance(e, ast.Starred) else e, scope, bound) for e in expr.elts)
        if isinstance(expr, ast.IfExp):
            return self.accepted(expr.body, scope, bound) and self.accepted(expr.orelse, scope, bound)
        if isinstance(expr, ast.JoinedStr):
            return all(self.accepted(v.value, scope, bound) for v in expr.values if isinstance(v, ast.FormattedValue))
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return self.accepted(expr.left, scope, bound) and self.accepted(expr.right, scope, bound)
        return False

    def check_sql(self, sql, scope, line: int, seen=()) -> None:
        if isinstance(sql, ast.JoinedStr):
            for part in sql.values:
                if isinstance(part, ast.FormattedValue) and not self.accepted(part.value, scope):
                    self.problems.append(f"{self.path.relative_to(REPO_ROOT)}:{line}: {{{ast.unparse(part.value)}}}")
        elif isinstance(sql, ast.BinOp) and isinstance(sql.op, ast.Mod):
            self.problems.append(f"{self.path.relative_to(REPO_ROOT)}:{line}: %-formatted SQL: {ast.unparse(sql)[:80]}")
        elif isinstance(sql, ast.Call) and isinstance(sql.func, ast.Attribute) and sql.func.attr == "format":
            self.problems.append(
                f"{self.path.relative_to(REPO_ROOT)}:{line}: .format()ted SQL: {ast.unparse(sql)[:80]}"
            )
        elif isinstance(sql, ast.Name) and sql.id not in seen:
            for value in self.assignments(sql.id, scope) or []:
                self.check_sql(value, scope, line, (*seen, sql.id))


def sql_problems() -> tuple[list[str], int]:
    problems, calls = [], 0
    for path, module_name in _modules():
        tree = ast.parse(path.read_text())
        checker = Checker(path, module_name, tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_METHODS
                and node.args
            ):
                calls += 1
                checker.check_sql(node.args[0], checker.function_of(node), node.lineno)
        problems += checker.problems
    return problems, calls


def _key(problem: str) -> str:
    """'path:line: {expr}' -> 'path: {expr}', the form ALLOWED uses."""
    location, expression = problem.split(": ", 1)
    return f"{location.rsplit(':', 1)[0]}: {expression}"


def test_sql_splices_only_checked_identifiers():
    found, calls = sql_problems()
    problems = [p for p in found if _key(p) not in ALLOWED]
    assert calls > 50, "the scan found too few SQL calls: is it still looking at the code?"
    assert set(ALLOWED) <= {_key(p) for p in found}, "an ALLOWED entry no longer occurs: remove it"
    assert problems == [], "values or unchecked names formatted into SQL:\n" + "\n".join(problems)


def test_sql_builders_check_their_identifiers():
    import inspect

    from mlops_core.features import offline

    bad = "x; drop table raw.transactions --"
    for name in SQL_BUILDERS:
        builder = getattr(offline, name)
        parameters = list(inspect.signature(builder).parameters)
        good = {p: "some_table" for p in parameters}
        assert "some_table" in builder(**good)
        for parameter in parameters:  # every identifier argument, one at a time
            try:
                builder(**{**good, parameter: bad})
            except ValueError as exc:
                assert "identifier" in str(exc)
            else:
                raise AssertionError(f"{name} spliced an unchecked {parameter}")


def test_the_scan_catches_what_it_forbids(tmp_path, monkeypatch):
    """The checker on a module with one bad call of each kind, so the test above can fail."""
    source = """
TABLE = "marts.t"
def bad(con, user_value, table):
    con.execute(f"select * from {TABLE} where name = '{user_value}'")
    con.execute("select * from t where id = %s" % user_value)
    con.execute("select * from {}".format(table))
    query = f"delete from {table}"
    con.execute(query)
def good(con, table, n):
    table = checked_identifier(table)
    con.execute(f"select * from {table} using sample {int(n)} rows", {})
"""
    tree = ast.parse(source)
    module = type(importlib)("fake_sql_module")
    module.TABLE = "marts.t"
    monkeypatch.setattr(importlib, "import_module", lambda name: module)
    checker = Checker(tmp_path / "x.py", "fake", tree)
    checker.path = REPO_ROOT / "fake.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "execute":
            checker.check_sql(node.args[0], checker.function_of(node), node.lineno)
    assert [p.split(": ", 1)[1] for p in checker.problems] == [
        "{user_value}",
        "%-formatted SQL: 'select * from t where id = %s' % user_value",
        ".format()ted SQL: 'select * from {}'.format(table)",
        "{table}",
    ]


def test_the_snapshot_feature_builder_refuses_what_the_declaration_would():
    """Built aggregates are re-checked where the SQL is made, not only when the declaration was read."""
    import pytest

    from mlops_core.projects.declaration import WindowedAggregate
    from mlops_core.projects.snapshots import snapshot_features_sql

    good = WindowedAggregate(aggregation="sum", column="amount_usd", windows=["30d"])
    assert "AS sum_amount_usd_30d" in snapshot_features_sql([good])
    for bad in (
        WindowedAggregate(aggregation="sum", column="amount_usd); drop table x; --", windows=["30d"]),
        WindowedAggregate(aggregation="max", column="merchant_id", windows=["30d"]),
        WindowedAggregate(aggregation="count", windows=["30) DAY; drop table x; --d"]),
    ):
        with pytest.raises(ValueError):
            snapshot_features_sql([bad])
