"""README, Makefile and .ci/run agree with each other and with the CLI."""

from __future__ import annotations

import re

from conftest import ROOT

from ntkhgm.cli import main


def test_install_and_test_commands_agree():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "    make install\n" in readme and "    make test\n" in readme
    assert '$(PYTHON) -m pip install -e ".[test,plot,sklearn]"' in makefile
    assert "$(PYTHON) -m pip install --no-deps passagemath-singular" in makefile
    assert "$(PYTHON) -m pytest -q" in makefile
    assert "set -euo pipefail" in ci and "make install" in ci and "make test" in ci


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"`ntkhgm (\w+)", readme)) | set(re.findall(r"^ {4}ntkhgm (\w+)",
                                                                       readme, re.M))
    assert {"activations", "dual", "kernel", "regress"} <= used
    assert used <= set(main.commands), used - set(main.commands)
