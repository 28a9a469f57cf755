"""``kp-vo --help`` is fast (imports no torch, onnxruntime or faiss) and every argument explains itself."""

import argparse
import subprocess
import sys

import pytest

from kp_vo.cli import build_parser

HEAVY = ("torch", "onnxruntime", "faiss", "cv2", "matplotlib")
PROBE = """
import sys
from kp_vo.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    assert exc.code == 0, exc.code
print("loaded:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["train", "--help"], ["map", "build", "--help"]])
def test_help_imports_no_heavy_library(argv):
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: kp-vo" in done.stdout
    assert done.stdout.splitlines()[-1] == "loaded:", f"kp-vo {' '.join(argv)} imported {done.stdout.splitlines()[-1]}"


def _arguments(parser: argparse.ArgumentParser, path: str):
    """(command path, action) of every argument of ``parser`` and its sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", argparse.Namespace(help=helps.get(name), dest=name, option_strings=[])
                yield from _arguments(sub, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def test_every_argument_and_command_has_help():
    missing = [f"{path}: {' '.join(a.option_strings) or a.dest}" for path, a in _arguments(build_parser(), "kp-vo")
               if not a.help or a.help == argparse.SUPPRESS]
    assert not missing, "no help text: " + "; ".join(missing)
