"""Installs the ``s3prl_plugins`` package and the one-line ``s3prl_plugins-autoload.pth`` that
registers our upstreams into ``s3prl.hub`` whenever s3prl.hub is imported (see s3prl_plugins/_autoload.py)."""

import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH = "s3prl_plugins-autoload.pth"


class BuildPyWithPth(build_py):
    """Ship the .pth file at the top of site-packages (wheels and editable installs alike)."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, PTH)
        os.makedirs(self.build_lib, exist_ok=True)
        shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH), target)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        mapping[os.path.join(self.build_lib, PTH)] = PTH
        return mapping


setup(
    name="s3prl-plugins",
    version="0.1.0",
    description="STaR, DistilHuBERT (+CIF) and MelHuBERT compression for s3prl and ESPnet",
    packages=find_packages(include=["s3prl_plugins", "s3prl_plugins.*"]),
    python_requires=">=3.9",
    cmdclass={"build_py": BuildPyWithPth},
)
