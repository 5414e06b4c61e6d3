"""The suite keeps its own rules: every assertion can fail, and errors are caught by their real type."""

import ast
from pathlib import Path

import pytest

TESTS = sorted(Path(__file__).parent.glob("*.py"))


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If):  # an assertion that only runs when a condition holds
            found += [f"line {n.lineno}: assert inside an if" for branch in (node.body, node.orelse)
                      for stmt in branch for n in ast.walk(stmt) if isinstance(n, ast.Assert)]
        elif isinstance(node, ast.Assert):
            if isinstance(node.test, ast.Constant):
                found.append(f"line {node.lineno}: assert of a constant")
            if any(isinstance(n, ast.IfExp) for n in ast.walk(node.test)):
                found.append(f"line {node.lineno}: condition inside an assert")
            test = node.test  # `x in y + x` is true whatever y holds
            if (isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.In)
                    and isinstance(test.comparators[0], ast.BinOp)
                    and ast.dump(test.comparators[0].right) == ast.dump(test.left)):
                found.append(f"line {node.lineno}: assert that cannot fail")
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "raises"
              and node.args and isinstance(node.args[0], ast.Name)
              and node.args[0].id in ("Exception", "BaseException")):
            found.append(f"line {node.lineno}: pytest.raises({node.args[0].id}) instead of the real error type")
    return found


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_every_assertion_can_fail_and_names_its_error(path):
    assert _violations(path) == []


def test_the_rules_catch_what_they_forbid(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("import pytest\n"
                   "def test_a(out, code):\n"
                   "    if code:\n"
                   "        assert out\n"
                   "    assert '3 done' in out + '3 done'\n"
                   "    assert (out == 1) if code else True\n"
                   "    with pytest.raises(Exception):\n"
                   "        pass\n")
    assert [v.split(": ")[1] for v in _violations(bad)] == [
        "assert inside an if", "assert that cannot fail", "condition inside an assert",
        "pytest.raises(Exception) instead of the real error type"]


def test_every_readme_promise_names_tests_that_exist():
    """The promise -> test table in tests/README.md names only real test functions."""
    import re

    table = [line for line in (Path(__file__).parent / "README.md").read_text().splitlines()
             if line.startswith("| ") and "`" in line]
    assert len(table) >= 40
    missing = []
    for line in table:
        test_file = None
        for ref in re.findall(r"`([^`]+)`", line.split("|")[2]):
            file_part, _, name = ref.rpartition("::") if "::" in ref else (ref, "", "")
            test_file = file_part if file_part.endswith(".py") else test_file
            name = name or ("" if ref.endswith(".py") else ref)
            source = (Path(__file__).parent / test_file).read_text()
            if name and f"def {name}(" not in source:
                missing.append(f"{test_file}::{name}")
    assert missing == []
