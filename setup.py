from setuptools import find_packages, setup

with open("requirements.txt") as f:
    install_requires = [line.strip() for line in f if line.strip() and not line.startswith("#")]

setup(
    name="keras-avloc",
    version="0.1.0",
    description="Self-supervised audio-visual sound-source localisation (LVS, EZ-VSL, AVGN, ...) in Keras 3",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_avloc", "keras_avloc.*"]),
    # TensorFlow 2.21 (pinned in requirements.txt) ships wheels for CPython 3.10-3.13 only
    # (its METADATA: Requires-Python >=3.10, classifiers 3.10, 3.11, 3.12, 3.13; no cp314 wheel).
    python_requires=">=3.10,<3.14",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
    install_requires=install_requires,
    extras_require={
        # mkdocs >= 1.6 for the anchor validation mkdocs.yml asks for (tests/test_docs.py builds the docs)
        # ruff is pinned to a minor release so that tests/test_lint.py gives the same verdict everywhere.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29",
                 "mkdocs>=1.6", "mkdocstrings[python]", "ruff==0.17.*"],
        # Only for weight conversion and cross-checks; pinned because an unpinned torch pulls a CUDA build.
        "torch": ["torch==2.13.0"],
    },
    entry_points={"console_scripts": ["avloc=keras_avloc.cli:main"]},
)
