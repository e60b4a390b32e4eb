"""The SQL-text check of tests/test_security.py: an AST walk over the trackctl package that finds
every statement sent to PostgreSQL and refuses any whose text is not fixed (see the rules below)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import trackctl

# -- SQL text: only constants, or psycopg.sql compositions ------------------------------------
#
# An AST check over every module of the package. For every call of .execute, .executemany,
# .stream and .copy (psycopg's connection and cursor methods: the only ways trackctl sends SQL,
# see test_the_sql_check_sees_every_way_trackctl_sends_sql), the statement argument must be
#   (a) a string literal;
#   (b) fixed text: a name bound once to a module-level constant (of that module, or imported from
#       another trackctl module) built only from literals, other such constants, `+`, and
#       f-strings / str.format whose substituted parts are themselves fixed text;
#   (c) a psycopg.sql composition: sql.SQL(fixed text).format(sql.Identifier(...), sql.Literal(...),
#       sql.Placeholder(...), other compositions), or their `+`.
# Three shapes of the real package are safe but outside (a)-(c), and the check allows exactly them:
#   - `a if cond else b` where both branches are fixed text (cond only chooses): poll.py's
#     RELEASE_FAILED / RELEASE_OK;
#   - a function's local name bound exactly once, by a plain `name = ...`, to fixed text:
#     webhooks.list_subscribers' `where = " WHERE s.enabled" if enabled_only else ""`;
#   - a number literal (or a constant bound to one) substituted into an f-string or .format:
#     events.py's advisory lock class GROUP_LOCK_CLASS = 7_262_005 in MEMBER_LIVE.
#   (d) a loaded query: `Q.name` where Q is bound once to `queries.load("<area>")` and
#       sql/queries/<area>.sql has a block `-- name: name`.
# Anything else fails: a local bound twice or rebound by a nested function, a parameter, a loop
# or `with` target, `%`, .replace() or any other call, an attribute of anything but a module.
# SQL_EXCEPTIONS lists the safe call sites of another shape, each with its reason.

SQL_METHODS = {"execute": "query", "executemany": "query", "stream": "query", "copy": "statement"}
# (module, function, statement expression): why it is safe. An entry that matches no call fails
# the test, so the list cannot outlive the code it excuses.
SQL_EXCEPTIONS = {
    ("trackctl.db", "migrate", "m.text"):
        "the text of the package's own numbered migration files, Migration.text read from db.sql_dir()",
}


class _Scope:
    """A module or function scope: its name bindings (value node, import target or None)."""

    def __init__(self, checker: "SqlChecker", module: str, node: ast.AST, parent: "_Scope | None") -> None:
        self.checker, self.module, self.node, self.parent = checker, module, node, parent
        self.bindings: dict[str, list] = {}
        self.global_names: set[str] = set()  # `global`: these names are the module's
        self.nonlocal_names: set[str] = set()  # `nonlocal`: these are an enclosing function's
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None:
                    self.bindings.setdefault(arg.arg, []).append(None)
        direct: dict[int, ast.AST] = {}
        own = list(self.own_nodes(node))
        for n in own:
            if isinstance(n, ast.Assign):
                direct.update((id(t), n.value) for t in n.targets if isinstance(t, ast.Name))
            elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.value is not None:
                direct[id(n.target)] = n.value
        for n in own:
            if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                self.bindings.setdefault(n.id, []).append(direct.get(id(n)))
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.bindings.setdefault(n.name, []).append(None)
                for inner in ast.walk(n):  # a nested function may rebind this scope's names
                    if isinstance(inner, ast.Nonlocal):
                        for name in inner.names:
                            self.bindings.setdefault(name, []).append(None)
            elif isinstance(n, ast.ExceptHandler) and n.name:
                self.bindings.setdefault(n.name, []).append(None)
            elif isinstance(n, ast.Global):
                self.global_names.update(n.names)
            elif isinstance(n, ast.Nonlocal):
                self.nonlocal_names.update(n.names)
            elif isinstance(n, ast.Import):
                for alias in n.names:
                    if alias.asname:
                        self.bindings.setdefault(alias.asname, []).append(("module", alias.name))
                    else:
                        top = alias.name.split(".")[0]
                        self.bindings.setdefault(top, []).append(("module", top))
            elif isinstance(n, ast.ImportFrom):
                base = checker.absolute(module, n.module, n.level)
                for alias in n.names:
                    self.bindings.setdefault(alias.asname or alias.name, []).append(("from", base, alias.name))

    @staticmethod
    def own_nodes(node: ast.AST):
        """The nodes of a scope, without the bodies of nested functions, lambdas and classes."""
        stack = list(ast.iter_child_nodes(node))
        while stack:
            n = stack.pop()
            yield n
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                stack.extend(ast.iter_child_nodes(n))


class SqlChecker:
    """Judges the statement argument of every SQL call in a set of modules (dotted name -> source)."""

    def __init__(self, sources: dict[str, str], packages: set[str] = frozenset()) -> None:
        self.trees = {name: ast.parse(src) for name, src in sources.items()}
        self.packages = set(packages)  # modules that are packages (their __init__)
        self._function_scopes: dict[str, list[_Scope]] = {}
        self.module_scopes = {name: _Scope(self, name, tree, None) for name, tree in self.trees.items()}
        self.poisoned: set[tuple[str, str]] = set()  # (module, name) assigned from outside: `mod.NAME = ...`
        self.calls_seen: list[tuple[str, int, str]] = []  # (module, line, method)
        self.exceptions_used: set[tuple[str, str, str]] = set()

    def absolute(self, module: str, name: str | None, level: int) -> str:
        if level == 0:
            return name or ""
        parts = module.split(".")
        base = parts if module in self.packages else parts[:-1]
        base = base[:len(base) - (level - 1)]
        return ".".join(base + ([name] if name else []))

    # -- what a name or attribute refers to ----------------------------------------------------

    def lookup(self, name: str, scope: _Scope):
        """Return ("value", node, scope), ("module", dotted) or ("external", dotted), else None."""
        s = scope
        while s is not None and s.parent is not None:  # the enclosing functions, innermost first
            if name in s.global_names:
                break
            if name in s.bindings and name not in s.nonlocal_names:
                return self.single(s.bindings[name], s)
            s = s.parent
        module_scope = self.module_scopes[scope.module]
        if (scope.module, name) in self.poisoned or any(
                name in f.global_names for f in self.function_scopes(scope.module)):
            return None
        if name not in module_scope.bindings:
            return None
        return self.single(module_scope.bindings[name], module_scope)

    def single(self, bindings: list, scope: _Scope):
        b = bindings[0]
        if len(bindings) > 1 and not (isinstance(b, tuple) and all(x == b for x in bindings)):
            return None  # bound more than once (the same import twice counts once)
        if b is None:
            return None  # a parameter, loop or `with` target, def, augmented assignment...
        if isinstance(b, ast.AST):
            return ("value", b, scope)
        if b[0] == "module":
            return ("module", b[1]) if self.is_module(b[1]) else ("external", b[1])
        _, base, attr = b
        if self.is_module(f"{base}.{attr}"):
            return ("module", f"{base}.{attr}")
        if self.is_module(base):
            return self.lookup(attr, self.module_scopes[base]) if base in self.trees else None
        return ("external", f"{base}.{attr}")

    def is_module(self, dotted: str) -> bool:
        return dotted in self.trees or any(m.startswith(dotted + ".") for m in self.trees)

    def ref(self, node: ast.AST, scope: _Scope):
        if isinstance(node, ast.Name):
            return self.lookup(node.id, scope)
        if isinstance(node, ast.Attribute):
            base = self.ref(node.value, scope)
            if base is None:
                return None
            if base[0] == "external":
                return ("external", f"{base[1]}.{node.attr}")
            if base[0] == "module":
                if self.is_module(f"{base[1]}.{node.attr}"):
                    return ("module", f"{base[1]}.{node.attr}")
                return self.lookup(node.attr, self.module_scopes[base[1]]) if base[1] in self.trees else None
        return None  # attribute of a value (self.x, m.text, row[0]...): not a constant

    def function_scopes(self, module: str) -> list[_Scope]:
        if module not in self._function_scopes:
            self._function_scopes[module] = [
                _Scope(self, module, n, self.module_scopes[module]) for n in ast.walk(self.trees[module])
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
        return self._function_scopes[module]

    # -- the rules -----------------------------------------------------------------------------

    def _joined(self, node: ast.AST, scope: _Scope, seen: frozenset, rule) -> bool | None:
        """The shapes both rules look through: a name bound to a value, `a + b`, `a if c else b`.

        Returns whether `rule` holds for every part, or None when `node` is none of these shapes.
        """
        if isinstance(node, (ast.Name, ast.Attribute)):
            r = self.ref(node, scope)
            return r is not None and r[0] == "value" and id(r[1]) not in seen \
                and rule(r[1], r[2], seen | {id(r[1])})
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return rule(node.left, scope, seen) and rule(node.right, scope, seen)
        if isinstance(node, ast.IfExp):
            return rule(node.body, scope, seen) and rule(node.orelse, scope, seen)
        return None

    def loaded(self, node: ast.AST, scope: _Scope) -> bool:
        """True for `Q.name` where Q is bound once to `queries.load("<area>")` and that area's file
        has a query called `name` (rule d: a statement read from sql/queries/)."""
        if not isinstance(node, ast.Attribute):
            return False
        r = self.ref(node.value, scope)
        if r is None or r[0] != "value" or not isinstance(r[1], ast.Call):
            return False
        call, where = r[1], r[2]
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr == "load"):
            return False
        base = self.ref(func.value, where)
        if base != ("module", "trackctl.queries") or call.keywords or len(call.args) != 1 \
                or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str):
            return False
        from trackctl import queries

        try:
            return node.attr in queries.load(call.args[0].value).names()
        except OSError:
            return False

    def fixed(self, node: ast.AST, scope: _Scope, seen: frozenset = frozenset()) -> bool:
        """True for text that can only ever be built from literals (rules a and b) or read from
        sql/queries/ (rule d)."""
        if self.loaded(node, scope):
            return True
        if isinstance(node, ast.Constant):
            return isinstance(node.value, (str, bytes))
        joined = self._joined(node, scope, seen, self.fixed)
        if joined is not None:
            return joined
        if isinstance(node, ast.JoinedStr):
            return all(self.fixed_part(v.value, scope, seen)
                       and (v.format_spec is None or self.fixed(v.format_spec, scope, seen))
                       for v in node.values if isinstance(v, ast.FormattedValue))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            return self.fixed(node.func.value, scope, seen) \
                and all(not isinstance(a, ast.Starred) and self.fixed_part(a, scope, seen) for a in node.args) \
                and all(k.arg is not None and self.fixed_part(k.value, scope, seen) for k in node.keywords)
        return False

    def fixed_part(self, node: ast.AST, scope: _Scope, seen: frozenset) -> bool:
        """Fixed text, or a number literal (or constant bound to one) put into an f-string or .format:
        events.py formats the advisory lock class GROUP_LOCK_CLASS = 7_262_005 into MEMBER_LIVE."""
        if isinstance(node, (ast.Name, ast.Attribute)):
            r = self.ref(node, scope)
            if r is not None and r[0] == "value" and isinstance(r[1], ast.Constant):
                node = r[1]
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return True
        return self.fixed(node, scope, seen)

    def composed(self, node: ast.AST, scope: _Scope, seen: frozenset = frozenset()) -> bool:
        """True for a psycopg.sql composition of fixed text and quoted parts (rule c)."""
        joined = self._joined(node, scope, seen, self.composed)
        if joined is not None:
            return joined
        if not isinstance(node, ast.Call):
            return False
        r = self.ref(node.func, scope)
        external = r[1] if r and r[0] == "external" else ""
        ctor = external.removeprefix("psycopg.sql.") if external.startswith("psycopg.sql.") else None
        if ctor == "SQL":
            return len(node.args) == 1 and not node.keywords and self.fixed(node.args[0], scope, seen)
        if ctor in ("Identifier", "Literal", "Placeholder"):
            return True  # psycopg quotes these: any value is safe here
        if ctor == "Composed":
            return len(node.args) == 1 and isinstance(node.args[0], (ast.List, ast.Tuple)) \
                and all(self.composed(e, scope, seen) for e in node.args[0].elts)
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join") \
                and self.composed(node.func.value, scope, seen):
            parts = list(node.args) + [k.value for k in node.keywords]
            if node.func.attr == "join":
                if len(parts) != 1 or not isinstance(parts[0], (ast.List, ast.Tuple)):
                    return False
                parts = parts[0].elts
            return all(k.arg is not None for k in node.keywords) \
                and all(not isinstance(p, ast.Starred) and self.composed(p, scope, seen) for p in parts)
        return False

    # -- the call sites ------------------------------------------------------------------------

    def offenders(self) -> list[str]:
        """Return `path:line problem` for every SQL call whose statement is not provably fixed."""
        self.poisoned, self.calls_seen, self.exceptions_used = set(), [], set()
        for module, tree in self.trees.items():  # first `mod.NAME = ...` anywhere: NAME is no constant
            for node, scope, _ in self._walk(module, tree, self.module_scopes[module], "<module>"):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    r = self.ref(node.value, scope)
                    if r and r[0] == "module":
                        self.poisoned.add((r[1], node.attr))
        found: list[str] = []
        for module, tree in self.trees.items():
            for node, scope, function in self._walk(module, tree, self.module_scopes[module], "<module>"):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in SQL_METHODS:
                    problem = self._judge(module, node, scope, function)
                    if problem:
                        found.append(f"{module.replace('.', '/')}.py:{node.lineno} {problem}")
        return found

    def _walk(self, module: str, node: ast.AST, scope: _Scope, function: str):
        """Yield (node, its scope, its function's name) for every node below `node`."""
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                name = getattr(child, "name", "<lambda>")
                yield from self._walk(module, child, _Scope(self, module, child, scope), name)
                continue
            yield child, scope, function
            yield from self._walk(module, child, scope, function)

    def _judge(self, module: str, call: ast.Call, scope: _Scope, function: str) -> str | None:
        method = call.func.attr
        keyword = SQL_METHODS[method]
        statement = next((k.value for k in call.keywords if k.arg == keyword), None)
        if call.args:
            statement = call.args[0]
        if statement is None:
            if method == "copy" and not call.keywords:
                return None  # dict.copy(), list.copy(): no statement to send
            return f".{method}() without a statement argument"
        self.calls_seen.append((module, call.lineno, method))
        text = ast.unparse(statement)
        if (module, function, text) in SQL_EXCEPTIONS:
            self.exceptions_used.add((module, function, text))
            return None
        if isinstance(statement, ast.Starred) or not (self.fixed(statement, scope) or self.composed(statement, scope)):
            return (f".{method}({text[:80]}) in {function}(): "
                    "statement text not built only from constants or psycopg.sql")
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
