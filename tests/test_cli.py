"""The fusar-gpt command line: only working commands, examples in --help, exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fusar_gpt.__main__ import COMMANDS, main
from fusar_gpt.model.checkpoint import export_official, load_tlm
from fusar_gpt.model.tlm import TLM


def test_help_lists_exactly_the_working_commands(capsys):
    main([])
    listed = capsys.readouterr().out
    for name in COMMANDS:
        assert name in listed
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out
    assert set(COMMANDS) == {"demo", "import-official"}


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "fusar_gpt", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("fusar-gpt ")


def test_import_official_command(tmp_path, capsys):
    export_official(TLM(24, sigma=2.0), tmp_path / "src")
    assert main(["import-official", str(tmp_path / "src"), "--out", str(tmp_path / "run"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hidden_size"] == 24 and info["adapter"] is False
    assert load_tlm(tmp_path / "run").missing == "identity"


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["import-official", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fusar-gpt import-official: error:") and "\n" not in err


def test_demo_smoke_pipeline_answers(tmp_path, capsys):
    assert main(["demo", "--preset", "tiny", "--json", "--keep", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["valid_anchors"] == 32 and report["anchors"] == 64
    assert isinstance(report["answer"], str) and (tmp_path / "backbone-tiny" / "config.json").exists()
