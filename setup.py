"""Builds the _tqds extension (and the tq/dscli programs) with the project's
CMake, for `pip install --no-build-isolation .` (works offline: it needs only
the Debian packages that scripts/setup.sh installs)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = ROOT / "build-pip"
        subprocess.check_call([
            "cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}", "-DTQDS_BUILD_TESTS=OFF", "-DTQDS_BUILD_BENCH=OFF",
        ])
        subprocess.check_call(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2),
                               "--target", "_tqds", "tq", "dscli", "ds_worker"])
        built = next((build_dir / "python").glob("_tqds*.so"))
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target)
        # The programs ship inside the package; the `tq` and `dscli` console
        # scripts (pyproject.toml) exec them.
        bindir = target.parent / "datasystem" / "_bin"
        bindir.mkdir(parents=True, exist_ok=True)
        for prog in ("tq", "dscli", "ds_worker"):
            shutil.copy2(build_dir / "bin" / prog, bindir / prog)


setup(
    ext_modules=[CMakeExtension("_tqds")],
    cmdclass={"build_ext": CMakeBuild},
)
