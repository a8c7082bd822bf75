"""Every public class, function, method and property of jwks_redis has a docstring, and
docs/python.md's reference section is what python/tools/reference.py renders from them."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "python" / "tools"))

import reference  # noqa: E402


def test_every_public_name_has_a_docstring():
    assert reference.undocumented() == []


def test_every_exported_name_is_in_the_reference():
    import jwks_redis
    text = reference.section(reference.DOC.read_text())
    for name in jwks_redis.__all__:
        assert f"`{name}" in text, name


def test_the_reference_in_python_md_is_current():
    doc = reference.DOC.read_text()
    assert reference.section(doc) == reference.render(), \
        "docs/python.md's reference is stale: run python3 python/tools/reference.py"
