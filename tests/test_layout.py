"""The package layout: top-level folders import only as rusts.*, never shadowing the stdlib."""

import codecs
import importlib
import subprocess
import sys
import sysconfig


def test_stdlib_codecs_is_not_shadowed():
    assert codecs.__file__.startswith(sysconfig.get_paths()["stdlib"])
    assert codecs.lookup("utf-8").name == "utf-8"


def test_rusts_subpackages_import_under_the_namespace():
    for name in ("rusts", "rusts.codecs", "rusts.actors", "rusts.protocols", "rusts.errors"):
        importlib.import_module(name)
    assert not any(m.split(".")[0] in ("actors", "protocols") for m in sys.modules)


def test_fresh_interpreter_from_repo_root_keeps_stdlib_codecs(tmp_path):
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    code = ("import codecs, sysconfig, rusts.codecs, sys;"
            "assert codecs.__file__.startswith(sysconfig.get_paths()['stdlib']);"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('actors','protocols')]")
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
