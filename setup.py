"""Packaging for shapeworks_progressive.

Install torch 2.13.0 (CPU build) *before* this package so that the range below is
already satisfied and pip does not fetch a multi-GB CUDA build.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="shapeworks_progressive",
    version="0.1.0",
    description=(
        "Progressive DeepSSM: predict ShapeWorks correspondence particles from "
        "unsegmented 3D images, coarse to fine."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["shapeworks_progressive", "shapeworks_progressive.*"]),
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "pandas>=2.0",
        "torch>=2.1,<2.15",
        "vtk>=9.2",
        "SimpleITK>=2.3",
        "openpyxl>=3.1",
        "libigl>=2.5",
        "pycpd>=2.0",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "scikit-learn>=1.3",
    ],
    extras_require={
        "test": ["pytest>=7"],
    },
    entry_points={
        "console_scripts": [
            "shapeworks-progressive=shapeworks_progressive.cli:main",
        ],
    },
)
