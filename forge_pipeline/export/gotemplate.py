"""A small interpreter for the subset of Go's text/template that Ollama chat templates use here: text with
{{ }} actions and Go's trim markers ("{{- " / " -}}" remove adjacent white space, newlines included), if / else
if / else / end, range over a list, $variables declared with := and assigned with = (an assignment inside
range is seen after it, as in Go >= 1.11), fields (.Role, .Content, .Messages, .System), string literals with
Go escapes, and the functions eq, ne, not, and, or, len, printf (%s only). Used to check Modelfile templates
against the Jinja chat templates they translate (export/modelfile.py); Ollama itself runs Go's package."""
from __future__ import annotations

import re

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


class GoTemplateError(ValueError):
    pass


def _tokenize_expr(expr: str) -> list[str]:
    if re.search(r'"[^"]*\n', expr):
        raise GoTemplateError("a Go string literal cannot contain a raw newline (write \\n)")
    return re.findall(r'"(?:[^"\\\n]|\\.)*"|\(|\)|\$?[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*|\.[A-Za-z_][\w.]*|\.|:=|=', expr)


def _unquote(tok: str) -> str:
    return bytes(tok[1:-1], "utf-8").decode("unicode_escape")


def _parse(template: str) -> list:
    """Nodes: ("text", s) | ("out", expr) | ("set", name, expr, declare) | ("if", [(cond, body)...], else_body)
    | ("range", expr, body). Trim markers are applied to the neighbouring text here, as Go's lexer does."""
    pieces: list = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        pieces.append(("text", text))
        pieces.append(("action", m.group(2).strip(), bool(m.group(3))))
        pos = m.end()
    pieces.append(("text", template[pos:]))
    for i, p in enumerate(pieces):  # right trim: " -}}" trims leading white space of the following text
        if p[0] == "action" and p[2] and i + 1 < len(pieces):
            pieces[i + 1] = ("text", pieces[i + 1][1].lstrip(" \t\r\n"))

    def block(i: int, stop: tuple[str, ...]) -> tuple[list, int, str]:
        nodes: list = []
        while i < len(pieces):
            p = pieces[i]
            if p[0] == "text":
                if p[1]:
                    nodes.append(("text", p[1]))
                i += 1
                continue
            act = p[1]
            word = act.split(None, 1)[0] if act else ""
            if word in ("end", "else") and word in stop:
                return nodes, i, act
            if word == "if":
                branches, else_body = [], []
                cond = act[2:].strip()
                while True:
                    body, i, closing = block(i + 1, ("end", "else"))
                    branches.append((cond, body))
                    if closing == "end":
                        break
                    rest = closing[4:].strip()
                    if rest.startswith("if "):
                        cond = rest[3:].strip()
                        continue
                    else_body, i, closing = block(i + 1, ("end",))
                    break
                nodes.append(("if", branches, else_body))
                i += 1
            elif word == "range":
                body, i, _ = block(i + 1, ("end",))
                nodes.append(("range", act[5:].strip(), body))
                i += 1
            elif re.match(r"^\$\w+\s*:?=", act):
                name, op, expr = re.match(r"^(\$\w+)\s*(:?=)\s*(.*)$", act, re.S).groups()
                nodes.append(("set", name, expr, op == ":="))
                i += 1
            else:
                nodes.append(("out", act))
                i += 1
        if stop:
            raise GoTemplateError("template ends inside a block (missing {{ end }})")
        return nodes, i, ""

    nodes, _, _ = block(0, ())
    return nodes


def _printf(fmt: str, *args) -> str:
    if re.search(r"%[^s]", fmt.replace("%%", "")):
        raise GoTemplateError(f"printf: only %s is supported here, not in {fmt!r}")
    parts = fmt.replace("%%", "\0").split("%s")
    if len(parts) - 1 != len(args):
        raise GoTemplateError(f"printf: {len(parts) - 1} %s for {len(args)} arguments")
    out = parts[0] + "".join(str(a) + p for a, p in zip(args, parts[1:]))
    return out.replace("\0", "%")


def _eval(tokens: list[str], dot, scope: dict):
    def value(tok):
        if tok.startswith('"'):
            return _unquote(tok)
        if tok == ".":
            return dot
        if tok.startswith("$"):
            name, *fields = tok.split(".")
            if name not in scope:
                raise GoTemplateError(f"undefined variable {name}")
            v = scope[name]
        elif tok.startswith("."):
            v, fields = dot, tok[1:].split(".")
        else:
            raise GoTemplateError(f"unknown token {tok!r}")
        for f in fields:
            v = v.get(f, "") if isinstance(v, dict) else getattr(v, f, "")
        return v

    def call(items):
        if not items:
            raise GoTemplateError("empty expression")
        head, args = items[0], items[1:]
        funcs = {"eq": lambda a, *b: any(a == x for x in b), "ne": lambda a, b: a != b, "not": lambda a: not a,
                 "and": lambda *a: all(a), "or": lambda *a: any(a), "len": len,
                 "printf": _printf}
        if isinstance(head, str) and head in funcs and head not in ("", None):
            return funcs[head](*args)
        if args:
            raise GoTemplateError(f"{head!r} is not a function")
        return head

    def parse(i):
        items = []
        while i < len(tokens) and tokens[i] != ")":
            tok = tokens[i]
            if tok == "(":
                v, i = parse(i + 1)
                items.append(v)
            elif re.fullmatch(r"[A-Za-z_]\w*", tok):
                items.append(tok)  # a function name
            else:
                items.append(value(tok))
            i += 1
        return call(items), i

    result, _ = parse(0)
    return result


def render_go(template: str, messages: list[dict], system: str = "") -> str:
    """Render an Ollama (Go text/template) chat template for ``messages`` (.Messages, .System)."""
    # Ollama's api.Message fields, as the Go template sees them
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages], "System": system}
    out: list[str] = []

    def run(nodes, dot, scope):
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "out":
                v = _eval(_tokenize_expr(node[1]), dot, scope)
                out.append("" if v is None else str(v))
            elif kind == "set":
                _, name, expr, declare = node
                if not declare and name not in scope:
                    raise GoTemplateError(f"assignment to undeclared variable {name}")
                scope[name] = _eval(_tokenize_expr(expr), dot, scope)
            elif kind == "if":
                for cond, body in node[1]:
                    if _eval(_tokenize_expr(cond), dot, scope):
                        run(body, dot, scope)
                        break
                else:
                    run(node[2], dot, scope)
            elif kind == "range":
                for item in _eval(_tokenize_expr(node[1]), dot, scope) or []:
                    run(node[2], item, scope)

    run(_parse(template), data, {"$": data})
    return "".join(out)
