"""The `rggan` command line: help for every flag, -v anywhere, readable output."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

import pytest

from rggan import cli, train_cli


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_flag_has_help():
    missing = [
        f"{p.prog} {'/'.join(a.option_strings) or a.dest}"
        for p in [*_parsers(cli.build_parser()), train_cli.build_parser()]
        for a in p._actions
        if not (a.help or "").strip() and not isinstance(a, argparse._SubParsersAction)
    ]
    assert missing == []


@pytest.mark.parametrize(
    "argv", [["-v", "info", "--genes", "9"], ["info", "-v", "--genes", "9"], ["--verbose", "info"]]
)
def test_verbose_anywhere(argv, capsys):
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        root.handlers.clear()  # logging.basicConfig only configures an unconfigured root logger
        assert cli.main(argv) == 0
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "parameter counts" in capsys.readouterr().out
    assert cli.build_parser().parse_args(["info"]).verbose is False


@pytest.mark.parametrize("argv", [["-v", "train", "--help"], ["train", "-v", "--help"]])
def test_verbose_with_train(argv):
    # subprocess: --help exits; `rggan -v train` used to end in AttributeError ('Namespace' ... 'func')
    proc = subprocess.run([sys.executable, "-m", "rggan.cli", *argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "usage: rggan train" in proc.stdout and "--verbose" in proc.stdout


def test_verbose_train_sets_debug_logging(monkeypatch):
    seen = {}

    def fake_run(**kwargs):  # what monai.bundle.run receives
        seen["conf"] = open(kwargs["logging_file"]).read()

    monkeypatch.setattr("monai.bundle.run", fake_run)
    assert cli.main(["-v", "train", "--device", "cpu", "--input", "x", "--output", "y"]) == 0
    assert "level=DEBUG" in seen["conf"] and "level=INFO" not in seen["conf"]
    assert cli.main(["train", "--device", "cpu", "--input", "x", "--output", "y"]) == 0
    assert "level=INFO" in seen["conf"]


def test_demo_data_prints_a_short_summary(tmp_path, capsys):
    assert cli.main(["demo-data", "--output", str(tmp_path / "d"), "--patients", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) <= 6 and len(out) < 700, out
    assert str(tmp_path / "d") in lines[0] and "DemoSummary(" not in out
    assert "2 usable patients" in out and "rggan prepare" in out
