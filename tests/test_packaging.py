"""Packaging: requirements.txt, setup.py and environment.yml agree; every third-party module the package imports
is an install requirement (or an explicitly optional extra imported lazily); every registered model class is
exported by `keras_avloc.models`; and the built wheel, installed (not editable) into a fresh virtual
environment, runs `avloc info` and the tiny demo.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_avloc"

# Import name -> distribution name, where the two differ (the rest are the same name).
IMPORT_TO_DISTRIBUTION = {
    "PIL": "pillow",
    "cv2": "opencv-python-headless",
    "sklearn": "scikit-learn",
    "yt_dlp": "yt-dlp",
}

# Third-party modules that are deliberately NOT install requirements. Each must be an extra of setup.py,
# be imported only inside functions (or in the modules listed with it, which must themselves only be
# imported inside functions), and fail with a message that names the extra.
OPTIONAL_IMPORTS = {
    # Weight conversion from .pth pickles and the torch cross-checks (`avloc port-weights --verify`);
    # `pip install -e '.[torch]'`. torch_reference.py is the plain-torch reference ResNet-18.
    "torch": {"extra": "torch", "modules": {"keras_avloc/backbones/torch_reference.py"}},
}


# --------------------------------------------------------------------------- reading the three files
def requirements_txt():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def setup_keywords(monkeypatch):
    """The keywords setup.py passes to `setup()`, computed by running setup.py against a stand-in setuptools
    (nothing is built; setup.py's own code reads requirements.txt exactly as it does for pip)."""
    captured = {}
    fake = types.ModuleType("setuptools")
    fake.setup = lambda **kwargs: captured.update(kwargs)
    fake.find_packages = lambda *args, **kwargs: []
    monkeypatch.setitem(sys.modules, "setuptools", fake)
    monkeypatch.chdir(ROOT)
    source = (ROOT / "setup.py").read_text()
    exec(compile(source, str(ROOT / "setup.py"), "exec"), {"__name__": "__main__", "__file__": str(ROOT / "setup.py")})
    assert captured, "setup.py did not call setup()"
    return captured


def setup_literal(name):
    """A keyword of setup.py's `setup()` call read with ast.literal_eval (extras_require, python_requires and
    classifiers must stay literals, for tools that read them without running setup.py)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == name:
                    return ast.literal_eval(keyword.value)
    raise AssertionError(f"setup.py: no setup({name}=...) keyword")


def extras_require_literal():
    return setup_literal("extras_require")


def environment_pip():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pips = [item["pip"] for item in environment["dependencies"] if isinstance(item, dict) and "pip" in item]
    assert len(pips) == 1, "environment.yml needs exactly one `- pip:` list"
    return [str(line).strip() for line in pips[0]]


def requirement_names(lines):
    return {canonicalize_name(Requirement(line).name) for line in lines}


# --------------------------------------------------------------------------- the imports of the package
def _module_level_nodes(tree):
    """Every node not nested in a function (module level, including class bodies and module-level if/try)."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imported_modules(node):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def package_imports():
    """{top-level module name: [(relative path, line, module level?)]} of every absolute import under keras_avloc/."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        module_level = {id(node) for node in _module_level_nodes(tree)}
        for node in ast.walk(tree):
            for name in _imported_modules(node):
                found.setdefault(name.split(".")[0], []).append(
                    (path.relative_to(ROOT).as_posix(), node.lineno, id(node) in module_level, name))
    return found


def third_party_imports():
    return {top: sites for top, sites in package_imports().items()
            if top not in sys.stdlib_module_names and top != "keras_avloc" and top != "__future__"}


# --------------------------------------------------------------------------- consistency of the three files
def test_setup_reads_install_requires_from_requirements_txt(monkeypatch):
    keywords = setup_keywords(monkeypatch)
    assert keywords["install_requires"] == requirements_txt()
    assert keywords["extras_require"] == extras_require_literal()


def test_environment_yml_pip_list_is_requirements_then_test_extra_then_editable_install():
    expected = requirements_txt() + extras_require_literal()["test"] + ["-e ."]
    assert environment_pip() == expected, (
        "environment.yml's pip list must be requirements.txt, then setup.py's `test` extra, then `-e .`:\n"
        + "\n".join(f"      - {line}" for line in expected))


def test_no_requirement_is_both_required_and_an_extra():
    required = requirement_names(requirements_txt())
    for extra, lines in extras_require_literal().items():
        both = required & requirement_names(lines)
        assert not both, f"{sorted(both)} are in requirements.txt and in the {extra!r} extra; keep one"


def test_python_requires_and_classifiers_agree():
    specifier = SpecifierSet(setup_literal("python_requires"))
    classified = {c.rsplit(" ", 1)[-1] for c in setup_literal("classifiers")
                  if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    allowed = {f"3.{minor}" for minor in range(0, 30) if f"3.{minor}.0" in specifier}
    assert classified == allowed, f"classifiers {sorted(classified)} vs python_requires {specifier}"
    # TensorFlow 2.21 (pinned in requirements.txt) has wheels for 3.10-3.13 (its Requires-Python is >=3.10).
    assert "tensorflow==2.21.*" in requirements_txt()
    assert allowed == {"3.10", "3.11", "3.12", "3.13"}
    assert f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}" in specifier


# --------------------------------------------------------------------------- imports vs requirements
def test_every_third_party_import_is_an_install_requirement():
    required = requirement_names(requirements_txt())
    missing = {}
    for top, sites in third_party_imports().items():
        if top in OPTIONAL_IMPORTS:
            continue
        distribution = canonicalize_name(IMPORT_TO_DISTRIBUTION.get(top, top))
        if distribution not in required:
            where = sorted({f"{path}:{line}" for path, line, _, _ in sites})
            missing[f"{top} (distribution {distribution})"] = where[:3]
    assert not missing, f"imported by keras_avloc/ but not in requirements.txt: {missing}"


def test_import_to_distribution_map_matches_the_installed_distributions():
    from importlib.metadata import packages_distributions

    installed = packages_distributions()
    for top in third_party_imports():
        if top not in installed:
            assert top in OPTIONAL_IMPORTS, f"{top} is imported by keras_avloc/ but not installed"
            continue
        expected = canonicalize_name(IMPORT_TO_DISTRIBUTION.get(top, top))
        assert expected in {canonicalize_name(d) for d in installed[top]}, (
            f"import {top} comes from {installed[top]}, not {expected}; fix IMPORT_TO_DISTRIBUTION")


def test_optional_imports_are_extras_and_imported_lazily():
    extras = extras_require_literal()
    required = requirement_names(requirements_txt())
    imports = package_imports()
    for top, rule in OPTIONAL_IMPORTS.items():
        distribution = canonicalize_name(IMPORT_TO_DISTRIBUTION.get(top, top))
        assert distribution not in required, f"{top} is optional; it must not be in requirements.txt"
        assert distribution in requirement_names(extras[rule["extra"]]), f"{top}: not in the {rule['extra']!r} extra"
        eager = [f"{path}:{line}" for path, line, module_level, _ in imports.get(top, [])
                 if module_level and path not in rule["modules"]]
        assert not eager, f"{top} is optional: import it inside the function that needs it, not at {eager}"
        # The modules that may import it at the top must themselves only be imported inside functions.
        dotted = {path[:-3].replace("/", ".") for path in rule["modules"]}
        eager = [f"{path}:{line}" for path, line, module_level, name in imports.get("keras_avloc", [])
                 if module_level and name in dotted and path not in rule["modules"]]
        assert not eager, f"{sorted(dotted)} need {top}; import them lazily, not at {eager}"


# --------------------------------------------------------------------------- exports
def test_every_registered_model_class_is_exported():
    import keras_avloc.models as models
    from keras_avloc.models import registry

    assert registry.builtin_methods()
    for method, target in registry.builtin_methods().items():
        module_name, _, class_name = target.partition(":")
        assert class_name in models.__all__, f"{class_name} ({method}) is missing from keras_avloc.models.__all__"
        assert models._LAZY.get(class_name) == module_name.rsplit(".", 1)[-1], f"{class_name}: not in _LAZY"
        assert getattr(models, class_name) is registry.get_method_class(method)
    missing = [name for name in models.__all__ if not hasattr(models, name)]
    assert not missing, f"keras_avloc.models.__all__ names what it does not have: {missing}"
    assert set(models.__all__) <= set(dir(models))


# --------------------------------------------------------------------------- the wheel, installed for real
def _base_python():
    """The interpreter the current virtual environment was made from (pyvenv.cfg `home`)."""
    config = Path(sys.prefix, "pyvenv.cfg")
    if config.is_file():
        values = dict(line.split("=", 1) for line in config.read_text().splitlines() if "=" in line)
        values = {key.strip(): value.strip() for key, value in values.items()}
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        for candidate in (values.get("executable"), os.path.join(values.get("home", ""), f"python{version}"),
                          os.path.join(values.get("home", ""), "python3")):
            if candidate and os.path.isfile(candidate):
                return candidate
    return sys.executable


def _run(command, cwd, env, timeout):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
        f"\n--- stderr\n{result.stderr[-4000:]}")
    return result.stdout


@pytest.mark.long
def test_wheel_installs_into_a_fresh_venv_and_runs_info_and_the_tiny_demo(tmp_path):
    import site
    from email.parser import Parser

    started = time.monotonic()
    # 1. Build the wheel from a copy of the sources, so the checkout gets no build/ or egg-info folders.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "requirements.txt", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "keras_avloc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels),
          str(source)], cwd=tmp_path, env=None, timeout=300)
    (wheel,) = wheels.glob("keras_avloc-*.whl")

    # The wheel holds every module of the package and metadata that matches the three files.
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    expected_modules = {path.relative_to(source).as_posix() for path in (source / "keras_avloc").rglob("*.py")}
    assert expected_modules - names == set(), f"modules missing from the wheel: {sorted(expected_modules - names)}"
    requires = metadata.get_all("Requires-Dist")
    base_requires = {str(Requirement(line)) for line in requires if "extra ==" not in line}
    assert base_requires == {str(Requirement(line)) for line in requirements_txt()}
    assert SpecifierSet(metadata["Requires-Python"]) == SpecifierSet(setup_literal("python_requires"))
    assert set(metadata.get_all("Classifier")) == set(setup_literal("classifiers"))
    assert set(metadata.get_all("Provides-Extra")) == set(extras_require_literal())

    # 2. A fresh venv from the same base interpreter; install the wheel (not editable, no dependencies)
    #    before the current environment's packages become visible, so pip sees no keras-avloc there.
    venv = tmp_path / "venv"
    _run([_base_python(), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
         cwd=tmp_path, env=None, timeout=120)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
         cwd=tmp_path, env=None, timeout=300)
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp_path, env=None, timeout=60).strip()
    # Plain path lines: the current environment's packages (TensorFlow, ...) without running its .pth files,
    # so its editable keras-avloc finder is not installed in the new venv. They come after the venv's own
    # site-packages on sys.path.
    Path(purelib, "zz_parent_site_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "cwd"  # not the checkout: a `keras_avloc` folder in the cwd would shadow the wheel
    work.mkdir()

    # 3. keras_avloc comes from the installed wheel, not from the source tree.
    probe = ("import importlib.metadata as m, json, keras_avloc; d = m.distribution('keras-avloc'); "
             "print(json.dumps([keras_avloc.__file__, keras_avloc.__version__, str(d.locate_file('')), "
             "d.read_text('direct_url.json')]))")
    module_file, version, distribution_root, direct_url = json.loads(
        _run([python, "-c", probe], cwd=work, env=env, timeout=120))
    assert Path(module_file).resolve().is_relative_to(venv.resolve()), module_file
    assert Path(distribution_root).resolve().is_relative_to(venv.resolve()), distribution_root
    assert not (direct_url and '"editable": true' in direct_url), direct_url
    assert version == metadata["Version"]

    # 4. The console script of the installed wheel.
    info = _run([venv / "bin" / "avloc", "info"], cwd=work, env=env, timeout=300)
    assert f"keras-avloc {metadata['Version']}" in info and "tensorflow  2.21" in info, info
    setup_seconds = time.monotonic() - started

    # 5. The tiny demo (stamps benchmark -> LVS training -> report), from the installed package.
    out, data = tmp_path / "out", tmp_path / "data"
    _run([venv / "bin" / "avloc", "demo", "--preset", "tiny", "--methods", "lvs", "--out", str(out),
          "--data", str(data)], cwd=work, env=env, timeout=900)
    report = (out / "report.md").read_text()
    assert "LVS" in report
    assert (out / "heatmaps.png").is_file()
    print(f"wheel build + venv + install + avloc info: {setup_seconds:.1f} s; "
          f"tiny demo: {time.monotonic() - started - setup_seconds:.1f} s")
