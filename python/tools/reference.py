"""Renders the API reference of the jwks_redis package from its docstrings into
docs/python.md, between the `<!-- reference:begin -->` and `<!-- reference:end -->` lines.

    python3 python/tools/reference.py           # rewrite the section
    python3 python/tools/reference.py --check   # exit 1 if the section is not current

python/tests/test_reference.py runs the check and fails on any public class, function,
method or property without a docstring.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, Iterator, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "python.md"
BEGIN = "<!-- reference:begin -->"
END = "<!-- reference:end -->"

#: The public surface: each module and the names it documents, in the order shown.
MODULES = [
    ("jwks_redis", None),  # its __all__, grouped below
    ("jwks_redis.endpoint", ["make_app", "redis_from_url", "cache_control_max_age",
                             "required_key", "main", "parse_args", "PATH", "STATUS_PATH"]),
    ("jwks_redis.status", ["collect", "render", "timelines", "KeySetStatus", "KeyTimeline"]),
    ("jwks_redis.keystore", ["ALGORITHMS"]),
    ("jwks_redis.signer", ["algorithm_of"]),
]

#: How the package's own names are grouped (every name in jwks_redis.__all__ is in one).
GROUPS = [
    ("Verifiers and issuers", ["KeyCache", "AsyncKeyCache", "Snapshot", "Signer", "AsyncSigner",
                               "KeyStore"]),
    ("Clients", ["JwksClient", "AsyncJwksClient", "Add", "Promote", "Retire", "Replace",
                 "RotateResult", "JwksDocument", "KeySetInfo", "KeyInfo", "Policy",
                 "NextChange", "AuditEntry", "derived_key", "events_channel"]),
    ("Invalidation", ["invalidate_jwks_cache_sync"]),
    ("Errors", ["JwksError", "ModuleNotLoaded", "InvalidKeyName", "InvalidJwk", "KidConflict",
                "UnknownKid", "InvalidState", "KeySetFull", "GenerationMismatch", "WrongType",
                "CorruptKeySet", "NoKeySet", "NoPermission", "AuditFull", "TooEarly",
                "KeyCacheError", "KeyCacheStale", "UnknownSigningKey", "NoCurrentKey",
                "KeyStoreError", "InsecureKeyStore", "InvalidKid", "SigningKeyMismatch"]),
]


def _sig(obj: Any, drop_self: bool = False) -> str:
    """Parameter names and defaults only (annotations vary with the Python version)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts: List[str] = []
    star_done = False
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if p.kind is p.VAR_POSITIONAL:
            parts.append("*" + p.name)
            star_done = True
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append("**" + p.name)
            continue
        text = p.name
        if p.default is not p.empty:
            default = p.default
            if dataclasses.is_dataclass(default) or callable(default) and \
                    not isinstance(default, type):
                text += "=..."
            else:
                text += f"={default!r}"
        parts.append(text)
    return "(" + ", ".join(parts) + ")"


def _doc(obj: Any) -> str:
    text = inspect.cleandoc(obj.__doc__ or "")
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and \
            text.startswith(obj.__name__ + "("):
        return ""  # the signature dataclasses write when there is no docstring
    if inspect.isclass(obj) and obj.__doc__ is not None and "__doc__" not in obj.__dict__:
        return ""  # inherited
    return text


def _own_doc(cls: type, name: str) -> Any:
    """The attribute as defined on the class (or the nearest package base)."""
    for base in cls.__mro__:
        if name in base.__dict__ and base.__module__.startswith("jwks_redis"):
            return base.__dict__[name]
    return None


def public_members(cls: type) -> Iterator[Tuple[str, str, Any]]:
    """(kind, name, object) for the public methods and properties a class (or a package
    base) defines, in definition order; dataclass fields are listed as fields."""
    seen = set()
    for base in cls.__mro__:
        if not base.__module__.startswith("jwks_redis"):
            continue
        for name, value in base.__dict__.items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            if isinstance(value, property):
                yield "property", name, value
            elif isinstance(value, (classmethod, staticmethod)):
                yield "method", name, value.__func__
            elif inspect.isfunction(value):
                yield "method", name, value


def render_class(cls: type, qual: str) -> List[str]:
    out = []
    if issubclass(cls, BaseException):
        return out
    init = _sig(cls)
    out.append(f"#### `{qual}{init}`")
    out.append("")
    out.append(_doc(cls) or "(no docstring)")
    out.append("")
    if dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
        out.append("Fields: " + ", ".join(f"`{n}`" for n in names) + ".")
        out.append("")
    for kind, name, obj in public_members(cls):
        if kind == "property":
            head = f"- `{name}` (property)"
        else:
            prefix = "async " if inspect.iscoroutinefunction(obj) else ""
            head = f"- `{prefix}{name}{_sig(obj, drop_self=True)}`"
        doc = _doc(obj.fget if kind == "property" else obj) or "(no docstring)"
        lines = doc.splitlines()
        out.append(f"{head}: {lines[0]}")
        out += [("  " + line) if line.strip() else "" for line in lines[1:]]
    if out[-1] != "":
        out.append("")
    return out


def render_function(fn: Any, qual: str) -> List[str]:
    prefix = "async " if inspect.iscoroutinefunction(fn) else ""
    return [f"#### `{prefix}{qual}{_sig(fn)}`", "", _doc(fn) or "(no docstring)", ""]


def render_errors(mod: Any, names: List[str]) -> List[str]:
    out = ["| exception | base | meaning |", "|---|---|---|"]
    for name in names:
        cls = getattr(mod, name)
        base = cls.__bases__[0]
        base_name = base.__name__ if base.__module__.startswith("jwks_redis") else \
            f"{base.__module__}.{base.__qualname__}"
        first = " ".join(_doc(cls).split("\n\n")[0].split()) or "(no docstring)"
        out.append(f"| `{name}` | `{base_name}` | {first.replace('|', '/')} |")
    return out + [""]


def render() -> str:
    pkg = importlib.import_module("jwks_redis")
    grouped = [n for _, names in GROUPS for n in names]
    missing = sorted(set(pkg.__all__) - set(grouped))
    if missing:
        raise SystemExit(f"reference.py: group these names in GROUPS: {missing}")
    out = [BEGIN, "",
           "Generated from the docstrings by `python3 python/tools/reference.py`;",
           "`python/tests/test_reference.py` fails if this section is not current.", ""]
    for title, names in GROUPS:
        out += [f"### {title}", ""]
        if title == "Errors":
            out += render_errors(pkg, names)
            continue
        for name in names:
            obj = getattr(pkg, name)
            out += render_class(obj, name) if inspect.isclass(obj) else render_function(obj, name)
    for modname, names in MODULES[1:]:
        mod = importlib.import_module(modname)
        out += [f"### `{modname}`", "", _doc(mod).split("\n\n")[0].replace("\n", " "), ""]
        for name in names:
            obj = getattr(mod, name)
            qual = f"{modname.rsplit('.', 1)[1]}.{name}"
            if inspect.isclass(obj):
                out += render_class(obj, qual)
            elif callable(obj):
                out += render_function(obj, qual)
            else:
                out += [f"#### `{qual}`", "", f"`{obj!r}`" if not isinstance(obj, dict) else
                        ", ".join(f"`{k}` ({v})" for k, v in obj.items()), ""]
    out.append(END)
    return "\n".join(out) + "\n"


def undocumented() -> List[str]:
    """Public names, methods and properties without a docstring."""
    bad = []
    pkg = importlib.import_module("jwks_redis")
    items = [(f"jwks_redis.{n}", getattr(pkg, n)) for n in pkg.__all__]
    for modname, names in MODULES[1:]:
        mod = importlib.import_module(modname)
        items += [(f"{modname}.{n}", getattr(mod, n)) for n in names]
    for qual, obj in items:
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not _doc(obj):
            bad.append(qual)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for kind, name, member in public_members(obj):
                target = member.fget if kind == "property" else member
                if not _doc(target):
                    bad.append(f"{qual}.{name}")
    return bad


def section(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END) + 1
    return text[start:end]


def main(argv: List[str]) -> int:
    sys.path.insert(0, str(ROOT / "python"))
    doc = DOC.read_text()
    new = render()
    if "--check" in argv:
        if section(doc) != new:
            print("docs/python.md's reference is not current: run python3 python/tools/reference.py")
            return 1
        return 0
    DOC.write_text(doc.replace(section(doc), new))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
