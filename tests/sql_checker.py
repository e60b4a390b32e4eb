"""The SQL-text check of tests/test_security.py: an AST walk over the trackctl package that finds
every statement sent to PostgreSQL and refuses any that is not read from a SQL file.

The one rule (issue 12): the statement argument of every `.execute`, `.executemany`, `.stream` and
`.copy` call (psycopg's connection and cursor methods, the only ways trackctl sends SQL: see
test_the_sql_check_sees_every_way_trackctl_sends_sql) is one of
  - a loaded query: `Q.name`, where Q is a name bound once to `queries.load("<area>")` (a literal
    area) and sql/queries/<area>.sql has a `-- name: name` block;
  - a migration: `queries.migration_script(path)`, the text of a numbered `NNNN_name.sql` file;
  - a psycopg.sql composition of loaded queries: `sql.SQL(<loaded query>)` with `.format()` or
    `.join()` of sql.Identifier / sql.Literal / sql.Placeholder or other compositions, their `+`,
    and `sql.Composed([...])` of compositions;
  - `a if cond else b` where both branches are one of these (the condition only chooses).
Anything else fails: a string literal or constant, an f-string, `+`, `%`, .format() or .replace()
of text, a parameter, an attribute of a value, a name bound more than once.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import trackctl

SQL_METHODS = {"execute": "query", "executemany": "query", "stream": "query", "copy": "statement"}
QUERIES = "trackctl.queries"


class SqlChecker:
    """Judges the statement argument of every SQL call in a set of modules (dotted name -> source)."""

    def __init__(self, sources: dict[str, str], packages: set[str] = frozenset()) -> None:
        self.trees = {name: ast.parse(src) for name, src in sources.items()}
        self.packages = set(packages)  # modules that are packages (their __init__)
        self.calls_seen: list[tuple[str, int, str]] = []  # (module, line, method)
        self.poisoned: set[tuple[str, str]] = set()  # (module, name) assigned from outside
        self._bindings: dict[tuple, list] = {}
        self._own: dict[int, list[ast.AST]] = {}

    def absolute(self, module: str, name: str | None, level: int) -> str:
        if level == 0:
            return name or ""
        parts = module.split(".")
        base = parts if module in self.packages else parts[:-1]
        base = base[:len(base) - (level - 1)]
        return ".".join(base + ([name] if name else []))

    # -- what a name refers to -------------------------------------------------------------------

    def bindings(self, module: str, scope: ast.AST, name: str) -> list:
        """Every binding of `name` in `scope` (nested functions' `global`/`nonlocal` included):
        an assigned value node, ("module", dotted), ("from", module, attr), or None (anything else)."""
        key = (module, id(scope), name)
        if key not in self._bindings:
            self._bindings[key] = self._find_bindings(module, scope, name)
        return self._bindings[key]

    def _find_bindings(self, module: str, scope: ast.AST, name: str) -> list:
        found: list = []
        args = scope.args if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else None
        if args and any(a is not None and a.arg == name for a in
                        [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]):
            found.append(None)
        if id(scope) not in self._own:
            self._own[id(scope)] = list(self.own_nodes(scope))
        own = self._own[id(scope)]
        assigned = {id(t) for n in own if isinstance(n, ast.Assign) for t in n.targets}
        for n in own:
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
                found.append(n.value if len(n.targets) == 1 else None)
            elif isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, (ast.Store, ast.Del)):
                if id(n) not in assigned:
                    found.append(None)  # a loop or `with` target, augmented or annotated assignment...
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found += [None] * (n.name == name)
                found += [None for inner in ast.walk(n) if isinstance(inner, (ast.Global, ast.Nonlocal))
                          and name in inner.names]
            elif isinstance(n, ast.ExceptHandler) and n.name == name:
                found.append(None)
            elif isinstance(n, ast.Import):
                for alias in n.names:
                    if (alias.asname or alias.name.split(".")[0]) == name:
                        found.append(("module", alias.name if alias.asname else name))
            elif isinstance(n, ast.ImportFrom):
                found += [("from", self.absolute(module, n.module, n.level), a.name)
                          for a in n.names if (a.asname or a.name) == name]
        return found

    @staticmethod
    def own_nodes(node: ast.AST):
        """The nodes of a scope, without the bodies of nested functions, lambdas and classes."""
        stack = list(ast.iter_child_nodes(node))
        while stack:
            n = stack.pop()
            yield n
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                stack.extend(ast.iter_child_nodes(n))

    def ref(self, node: ast.AST, module: str, scopes: list[ast.AST]):
        """("value", node, module, scopes), ("module", dotted) or ("external", dotted) of a name or
        a module's attribute, or None when it is anything else or bound more than once."""
        if isinstance(node, ast.Attribute):
            base = self.ref(node.value, module, scopes)
            if base is None or base[0] == "value":
                return None  # an attribute of a value: nothing fixed
            dotted = f"{base[1]}.{node.attr}"
            if base[0] == "external" or self.is_module(dotted):
                return (base[0], dotted)
            return self.ref(ast.Name(node.attr), base[1], [self.trees[base[1]]]) if base[1] in self.trees else None
        if not isinstance(node, ast.Name):
            return None
        for i in range(len(scopes) - 1, -1, -1):  # innermost scope first
            found = self.bindings(module, scopes[i], node.id)
            if i == 0 and (module, node.id) in self.poisoned:  # set from outside: `mod.NAME = ...`
                return None
            if not found:
                continue
            b = found[0]
            if b is None or any(x != b for x in found[1:]):
                return None
            if isinstance(b, ast.AST):
                return ("value", b, module, scopes[:i + 1])
            dotted = b[1] if b[0] == "module" else f"{b[1]}.{b[2]}"
            if b[0] == "from" and not self.is_module(dotted) and b[1] in self.trees:
                return self.ref(ast.Name(b[2]), b[1], [self.trees[b[1]]])
            return ("module" if self.is_module(dotted) else "external", dotted)
        return None

    def is_module(self, dotted: str) -> bool:
        return dotted in self.trees or any(m.startswith(dotted + ".") for m in self.trees)

    # -- the rule --------------------------------------------------------------------------------

    def loaded(self, node: ast.AST, module: str, scopes: list[ast.AST]) -> bool:
        """`Q.name` with Q bound once to `queries.load("<area>")` whose file has `name`."""
        if not isinstance(node, ast.Attribute):
            return False
        r = self.ref(node.value, module, scopes)
        if r is None or r[0] != "value" or not self.queries_call(r[1], "load", r[2], r[3]):
            return False
        area = r[1].args[0]
        if not (isinstance(area, ast.Constant) and isinstance(area.value, str)):
            return False
        from trackctl import queries

        try:
            return node.attr in queries.load(area.value).names()
        except OSError:
            return False

    def queries_call(self, node: ast.AST, function: str, module: str, scopes: list[ast.AST]) -> bool:
        """A call `queries.<function>(one positional argument)` of the module trackctl.queries."""
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == function \
            and self.ref(node.func.value, module, scopes) == ("module", QUERIES) \
            and len(node.args) == 1 and not node.keywords and not isinstance(node.args[0], ast.Starred)

    def accepted(self, node: ast.AST, module: str, scopes: list[ast.AST]) -> bool:
        if isinstance(node, ast.IfExp):
            return self.accepted(node.body, module, scopes) and self.accepted(node.orelse, module, scopes)
        return self.loaded(node, module, scopes) or self.queries_call(node, "migration_script", module, scopes) \
            or self.composed(node, module, scopes)

    def composed(self, node: ast.AST, module: str, scopes: list[ast.AST]) -> bool:
        """A psycopg.sql composition whose only text is loaded queries."""
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.composed(node.left, module, scopes) and self.composed(node.right, module, scopes)
        if isinstance(node, ast.Name):
            r = self.ref(node, module, scopes)
            return r is not None and r[0] == "value" and self.composed(r[1], r[2], r[3])
        if not isinstance(node, ast.Call):
            return False
        r = self.ref(node.func, module, scopes)
        ctor = r[1].removeprefix("psycopg.sql.") if r and r[0] == "external" and r[1].startswith("psycopg.sql.") \
            else None
        if ctor == "SQL":
            return len(node.args) == 1 and not node.keywords and self.loaded(node.args[0], module, scopes)
        if ctor in ("Identifier", "Literal", "Placeholder"):
            return True  # psycopg quotes these: any value is safe here
        if ctor == "Composed":
            return len(node.args) == 1 and isinstance(node.args[0], (ast.List, ast.Tuple)) \
                and all(self.composed(e, module, scopes) for e in node.args[0].elts)
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join") \
                and self.composed(node.func.value, module, scopes):
            parts = list(node.args) + [k.value for k in node.keywords]
            if node.func.attr == "join":
                if len(parts) != 1 or not isinstance(parts[0], (ast.List, ast.Tuple)):
                    return False
                parts = parts[0].elts
            return all(k.arg is not None for k in node.keywords) \
                and all(not isinstance(p, ast.Starred) and self.composed(p, module, scopes) for p in parts)
        return False

    # -- the call sites --------------------------------------------------------------------------

    def offenders(self) -> list[str]:
        """Return `path:line problem` for every SQL call whose statement the rule does not accept."""
        self.calls_seen, self.poisoned = [], set()
        poisoned = {(r[1], n.attr) for m, tree in self.trees.items() for n in ast.walk(tree)
                    if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                    and (r := self.ref(n.value, m, [tree])) and r[0] == "module"}
        self.poisoned = poisoned
        found: list[str] = []
        for module, tree in self.trees.items():
            for node, scopes in self._walk(tree, [tree]):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in SQL_METHODS:
                    problem = self._judge(module, node, scopes)
                    if problem:
                        found.append(f"{module.replace('.', '/')}.py:{node.lineno} {problem}")
        return found

    def _walk(self, node: ast.AST, scopes: list[ast.AST]):
        for child in ast.iter_child_nodes(node):
            inner = scopes + [child] if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) \
                else scopes
            yield child, inner
            yield from self._walk(child, inner)

    def _stdlib_copy(self, module: str, call: ast.Call) -> bool:
        """`copy.copy(...)` in a module that imports the standard library's `copy` module by that name."""
        receiver = call.func.value
        return isinstance(receiver, ast.Name) and receiver.id == "copy" and any(
            isinstance(n, ast.Import) and any(a.name == "copy" and a.asname is None for a in n.names)
            for n in ast.walk(self.trees[module]))

    def _judge(self, module: str, call: ast.Call, scopes: list[ast.AST]) -> str | None:
        method = call.func.attr
        statement = next((k.value for k in call.keywords if k.arg == SQL_METHODS[method]), None)
        if call.args:
            statement = call.args[0]
        if statement is None:
            if method == "copy" and not call.keywords:
                return None  # dict.copy(), list.copy(): no statement to send
            return f".{method}() without a statement argument"
        self.calls_seen.append((module, call.lineno, method))
        if method == "copy" and self._stdlib_copy(module, call):
            return None  # copy.copy(obj) of the standard library's copy module: no statement to send
        if isinstance(statement, ast.Starred) or not self.accepted(statement, module, scopes):
            function = next((s.name for s in reversed(scopes) if hasattr(s, "name")), "<module>")
            return (f".{method}({ast.unparse(statement)[:80]}) in {function}(): "
                    "not a loaded query, a migration or a psycopg.sql composition of them")
        return None


def sql_offenders(sources: dict[str, str], packages: set[str] = frozenset()) -> list[str]:
    return SqlChecker({k: textwrap.dedent(v) for k, v in sources.items()}, packages).offenders()


def package_sources() -> tuple[dict[str, str], set[str]]:
    root = Path(trackctl.__file__).parent
    sources, packages = {}, set()
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
            packages.add(".".join(parts))
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources, packages
