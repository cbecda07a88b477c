"""Installs ``pyserini_kdspd.pth`` beside the package so stock Pyserini CLIs work in this environment.

The .pth line imports ``pyserini_kdspd._startup``, a no-cost import hook (see its docstring).
It is added to the wheel for both ``pip install .`` and ``pip install -e .``.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "pyserini_kdspd.pth"
PTH_LINE = "import pyserini_kdspd._startup\n"


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, PTH_NAME)
        self.mkpath(self.build_lib)
        with open(target, "w") as f:
            f.write(PTH_LINE)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_NAME)]


try:  # PEP 660 editable installs build their wheel from this folder, not from build_lib
    from setuptools.command.editable_wheel import editable_wheel

    class editable_wheel_with_pth(editable_wheel):
        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
            result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
            with open(os.path.join(unpacked_wheel, PTH_NAME), "w") as f:
                f.write(PTH_LINE)
            return result

    EXTRA = {"editable_wheel": editable_wheel_with_pth}
except ImportError:  # old setuptools: `pip install -e .` goes through develop, which has no wheel
    EXTRA = {}

setup(cmdclass={"build_py": build_py_with_pth, **EXTRA})
