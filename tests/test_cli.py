import subprocess
import sys
from pathlib import Path

from keras_avloc import __version__
from keras_avloc.cli import build_parser, main
from keras_avloc.cli.info import cpu_flags

REPO = Path(__file__).resolve().parents[1]


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert __version__ in capsys.readouterr().out


def test_every_subcommand_has_help_with_examples():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"info", "port-weights", "download", "data", "train", "evaluate", "localize", "demo"} <= set(
        subparsers.choices
    )
    for name, sub in subparsers.choices.items():
        assert "Example" in (sub.epilog or ""), f"`avloc {name} --help` has no examples"


def test_info_runs_without_tensorflow(capsys):
    assert main(["info", "--no-tf"]) == 0
    out = capsys.readouterr().out
    assert "keras-avloc" in out and "bf16" in out


def test_cpu_flags_parses_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16\n")
    flags = cpu_flags(str(cpuinfo))
    assert flags["avx512f"] and flags["amx_bf16"] and not flags["avx512_bf16"]


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "keras_avloc", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text().splitlines()
    assert readme[0] == "# keras-avloc"
    index = readme.index("# Run the tests")
    command = readme[index + 1]
    assert "pytest" in command
    assert "# Run the tests" in (REPO / ".ci" / "run").read_text()
